package containerd

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// Messages as containerd sends them, built with the package's encoders.

func encTime(t time.Time) enc {
	return enc(nil).uint(timestampSeconds, uint64(t.Unix())).uint(timestampNanos, uint64(t.Nanosecond()))
}

var (
	created = time.Date(2026, 12, 3, 8, 0, 0, 123456789, time.UTC)
	exited  = time.Date(2026, 12, 3, 9, 30, 1, 5, time.UTC)
)

func encProcess() enc {
	const stdout = 6 // read by no decoder
	return enc(nil).str(processID, "web").uint(processPid, 4242).uint(processStatus, statusStopped).
		str(stdout, "/run/out").uint(processExitStatus, 137).msg(processExitedAt, encTime(exited))
}

func encContainer(id string) enc {
	return enc(nil).str(containerID, id).labels(containerLabels, map[string]string{LabelManaged: "true", "k": ""}).
		str(containerImage, "127.0.0.1:5000/test/busybox:1").
		msg(containerRuntime, enc(nil).str(containerRuntimeName, runcRuntime)).
		msg(containerSpec, enc(nil).str(anyTypeURL, specTypeURL).bytes(anyValue, []byte(`{"ociVersion":"1.2.0"}`))).
		str(containerSnapshotter, Snapshotter).str(containerSnapshotKey, id).
		msg(containerCreatedAt, encTime(created)).msg(9, encTime(exited)) // updated_at
}

func encMounts() enc {
	return enc(nil).msg(snapshotMounts, mount{Type: "overlay", Source: "overlay", Options: []string{"workdir=/w", "upperdir=/u", "lowerdir=/l"}}.enc()).
		msg(snapshotMounts, mount{Type: "bind", Source: "/s", Target: "/t"}.enc())
}

func encGetImage() enc {
	d := descriptor{MediaType: mediaOCIManifest, Digest: "sha256:" + strings.Repeat("ab", 32), Size: 1234}
	return enc(nil).msg(imageField, enc(nil).str(imageName, "docker.io/library/busybox:1").
		labels(2, map[string]string{"a": "b"}).msg(imageTarget, d.enc()).msg(7, encTime(created)))
}

// decoders runs every decoder on b; the fuzz target and the table tests
// use it.
var decoders = map[string]func(b []byte) (any, error){
	"Container":      func(b []byte) (any, error) { c, s, err := decodeContainer(b); return [2]any{c, s}, err },
	"GetContainer":   func(b []byte) (any, error) { c, s, err := decodeGetContainer(b); return [2]any{c, s}, err },
	"ListContainers": func(b []byte) (any, error) { return decodeContainers(b) },
	"Process":        func(b []byte) (any, error) { return decodeProcess(b) },
	"GetTask":        func(b []byte) (any, error) { return decodeGetTask(b) },
	"ListTasks":      func(b []byte) (any, error) { return decodeTasks(b) },
	"Mount":          func(b []byte) (any, error) { return decodeMount(b) },
	"Mounts":         func(b []byte) (any, error) { return decodeMounts(b, "MountsResponse") },
	"Timestamp":      func(b []byte) (any, error) { return decodeTime(b) },
	"Label": func(b []byte) (any, error) {
		k, v, err := decodeLabel(b, "containerd.services.containers.v1.Container")
		return [2]string{k, v}, err
	},
	"Any":         func(b []byte) (any, error) { u, v, err := decodeAny(b); return [2]any{u, v}, err },
	"Descriptor":  func(b []byte) (any, error) { return decodeDescriptor(b) },
	"GetImage":    func(b []byte) (any, error) { return decodeGetImage(b) },
	"Version":     func(b []byte) (any, error) { return decodeVersion(b) },
	"ReadContent": func(b []byte) (any, error) { o, d, err := decodeReadContent(b); return [2]any{o, d}, err },
}

func TestDecodeValid(t *testing.T) {
	web := Container{ID: "web", Image: "127.0.0.1:5000/test/busybox:1",
		Labels: map[string]string{LabelManaged: "true", "k": ""}, CreatedAt: created}
	task := Task{ID: "web", Pid: 4242, State: StateExited, ExitCode: 137, ExitedAt: exited}
	mounts := []mount{{Type: "overlay", Source: "overlay", Options: []string{"workdir=/w", "upperdir=/u", "lowerdir=/l"}},
		{Type: "bind", Source: "/s", Target: "/t"}}
	spec := []byte(`{"ociVersion":"1.2.0"}`)
	for _, tc := range []struct {
		decoder string
		in      enc
		want    any
	}{
		{"Container", encContainer("web"), [2]any{web, spec}},
		{"GetContainer", enc(nil).msg(containerField, encContainer("web")), [2]any{web, spec}},
		{"ListContainers", enc(nil).msg(listContainersContainers, encContainer("web")).msg(listContainersContainers, encContainer("db")),
			[]Container{web, {ID: "db", Image: web.Image, Labels: web.Labels, CreatedAt: created}}},
		{"ListContainers", nil, []Container(nil)},
		{"Process", encProcess(), task},
		// container_id wins over id, whatever their order.
		{"Process", enc(nil).str(processID, "exec-1").str(processContainerID, "web").uint(processStatus, statusRunning),
			Task{ID: "web", State: StateRunning}},
		{"Process", enc(nil).uint(processStatus, statusPausing), Task{State: StatePaused}},
		{"Process", enc(nil).uint(processStatus, 99), Task{State: StateCreated}},
		{"GetTask", enc(nil).msg(getTaskProcess, encProcess()), task},
		{"ListTasks", enc(nil).msg(listTasksTasks, encProcess()).msg(listTasksTasks, enc(nil).str(processID, "db").uint(processStatus, statusCreated)),
			map[string]Task{"web": task, "db": {ID: "db", State: StateCreated}}},
		{"Mounts", encMounts(), mounts},
		{"Mount", mounts[0].enc(), mounts[0]},
		{"Timestamp", encTime(created), created},
		{"Timestamp", nil, time.Unix(0, 0).UTC()},
		{"Timestamp", enc(nil).uint(timestampSeconds, u64(minTimestamp)), time.Unix(minTimestamp, 0).UTC()},
		{"Label", enc(nil).str(mapKey, "k").str(mapValue, "v"), [2]string{"k", "v"}},
		{"Any", enc(nil).str(anyTypeURL, specTypeURL).bytes(anyValue, spec), [2]any{specTypeURL, spec}},
		{"GetImage", encGetImage(), descriptor{MediaType: mediaOCIManifest, Digest: "sha256:" + strings.Repeat("ab", 32), Size: 1234}},
		{"Version", enc(nil).str(versionVersion, "1.6.20~ds1").str(2, "1.6.20~ds1-1+deb12u3"), "1.6.20~ds1"},
		{"ReadContent", enc(nil).uint(readContentOffset, 1<<20).bytes(readContentData, []byte("{}")), [2]any{int64(1 << 20), []byte("{}")}},
		// Unknown fields of every wire type are skipped.
		{"Version", unknownFields(enc(nil).str(versionVersion, "2.1.0")), "2.1.0"},
		{"Mount", unknownFields(mounts[1].enc()), mounts[1]},
	} {
		got, err := decoders[tc.decoder]([]byte(tc.in))
		if err != nil {
			t.Errorf("%s(%x): %v", tc.decoder, []byte(tc.in), err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s(%x) = %#v, want %#v", tc.decoder, []byte(tc.in), got, tc.want)
		}
	}
}

func u64(i int64) uint64 { return uint64(i) }

// unknownFields appends a field of every wire type under numbers no
// decoder reads.
func unknownFields(e enc) enc {
	e = protowire.AppendTag(e, 100, protowire.VarintType)
	e = protowire.AppendVarint(e, 7)
	e = protowire.AppendTag(e, 101, protowire.Fixed32Type)
	e = protowire.AppendFixed32(e, 7)
	e = protowire.AppendTag(e, 102, protowire.Fixed64Type)
	e = protowire.AppendFixed64(e, 7)
	e = protowire.AppendTag(e, 103, protowire.StartGroupType)
	e = enc(e).uint(1, 7)
	e = protowire.AppendTag(e, 103, protowire.EndGroupType)
	return e.str(104, "unknown")
}

// withLength is a length-delimited field num whose length prefix is n
// whatever the data that follows.
func withLength(num protowire.Number, n uint64, data string) enc {
	e := protowire.AppendTag(nil, num, protowire.BytesType)
	e = protowire.AppendVarint(e, n)
	return append(e, data...)
}

func TestDecodeMalformed(t *testing.T) {
	proc := encProcess()
	ctr := encContainer("web")
	for _, tc := range []struct {
		name, decoder string
		in            enc
		want          string // in the error
	}{
		{"truncated tag", "Version", enc{0x8a}, "malformed containerd.services.version.v1.VersionResponse: unexpected EOF"},
		{"truncated varint", "Process", proc[:len(enc(nil).str(processID, "web"))+2], "malformed containerd.v1.types.Process field 3: unexpected EOF"},
		{"truncated string", "Version", enc(nil).str(versionVersion, "1.6.20")[:5], "malformed containerd.services.version.v1.VersionResponse field 1: unexpected EOF"},
		{"truncated list", "ListTasks", enc(nil).msg(listTasksTasks, proc)[:len(proc)/2], "malformed containerd.services.tasks.v1.ListTasksResponse field 1"},
		{"truncated inner message", "ListTasks", enc(nil).msg(listTasksTasks, proc[:len(proc)-3]),
			"containerd.services.tasks.v1.ListTasksResponse field 1: malformed containerd.v1.types.Process field 10"},
		{"truncated timestamp", "Container", enc(nil).msg(containerCreatedAt, encTime(created)[:3]),
			"containerd.services.containers.v1.Container field 8: malformed google.protobuf.Timestamp field 1: unexpected EOF"},
		{"over-long length", "Mount", withLength(mountSource, 100, "/short"), "malformed containerd.types.Mount field 2: unexpected EOF"},
		{"over-long length beyond any buffer", "Mounts", withLength(snapshotMounts, 1<<62, ""), "malformed containerd.services.snapshots.v1.MountsResponse field 1"},
		{"over-long inner length", "GetImage", enc(nil).msg(imageField, enc(nil).msg(imageTarget, withLength(descriptorDigest, 72, "sha256:"))),
			"containerd.services.images.v1.GetImageResponse field 1: containerd.services.images.v1.Image field 3: malformed containerd.types.Descriptor field 2: unexpected EOF"},
		{"varint where a string is", "Container", enc(nil).uint(containerID, 1),
			"containerd.services.containers.v1.Container field 1: wire type varint, want length-delimited"},
		{"varint where a message is", "GetTask", enc(nil).uint(getTaskProcess, 1), "containerd.services.tasks.v1.GetResponse field 1: wire type varint, want length-delimited"},
		{"string where a varint is", "Process", enc(nil).str(processPid, "4242"), "containerd.v1.types.Process field 3: wire type length-delimited, want varint"},
		{"fixed64 where a varint is", "Timestamp", enc(protowire.AppendFixed64(protowire.AppendTag(nil, timestampSeconds, protowire.Fixed64Type), 1)),
			"google.protobuf.Timestamp field 1: wire type fixed64, want varint"},
		{"string where a label is", "Container", append(append(enc(nil), ctr...), enc(nil).uint(containerLabels, 3)...),
			"containerd.services.containers.v1.Container field 2: wire type varint, want length-delimited"},
		{"wrong type in a label", "Container", enc(nil).msg(containerLabels, enc(nil).str(mapKey, "k").uint(mapValue, 1)),
			"containerd.services.containers.v1.Container field 2: containerd.services.containers.v1.Container.LabelsEntry field 2: wire type varint"},
		{"wrong type in a mount", "Mounts", enc(nil).msg(snapshotMounts, enc(nil).uint(mountOptions, 1)),
			"containerd.services.snapshots.v1.MountsResponse field 1: containerd.types.Mount field 4: wire type varint"},
		{"wrong type in a spec", "GetContainer", enc(nil).msg(containerField, enc(nil).msg(containerSpec, enc(nil).uint(anyValue, 1))),
			"containerd.services.containers.v1.Container field 5: google.protobuf.Any field 2: wire type varint"},
		{"invalid UTF-8", "Version", enc(nil).str(versionVersion, "1.6\xff"), "VersionResponse field 1: string is not valid UTF-8"},
		{"negative nanos", "Timestamp", enc(nil).uint(timestampSeconds, 1).uint(timestampNanos, uint64(1<<64-1)), "google.protobuf.Timestamp 1s -1ns is out of range"},
		{"nanos of more than a second", "Timestamp", enc(nil).uint(timestampNanos, 1e9), "out of range"},
		{"seconds after 9999", "Process", enc(nil).msg(processExitedAt, enc(nil).uint(timestampSeconds, maxTimestamp+1)),
			"containerd.v1.types.Process field 10: google.protobuf.Timestamp 253402300800s 0ns is out of range"},
		{"end group without start", "Version", enc(protowire.AppendTag(nil, 5, protowire.EndGroupType)), "malformed containerd.services.version.v1.VersionResponse field 5"},
		{"field number 0", "Version", enc{0x02, 0x00}, "malformed containerd.services.version.v1.VersionResponse"},
		{"no process", "GetTask", nil, "GetResponse without a process"},
		{"no container", "GetContainer", enc(nil).str(2, "x"), "GetContainerResponse without a container"},
		{"no image", "GetImage", nil, "GetImageResponse without an image"},
	} {
		_, err := decoders[tc.decoder]([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %s(%x) = error %v, want one containing %q", tc.name, tc.decoder, []byte(tc.in), err, tc.want)
		}
	}
}

// TestDecodeTruncated cuts every valid message at every byte that is not
// a field boundary: each cut is an error.
func TestDecodeTruncated(t *testing.T) {
	for _, s := range seeds() {
		for name, dec := range decoders {
			checkTruncated(t, name, dec, s)
		}
	}
}

func seeds() [][]byte {
	var out [][]byte
	for _, e := range []enc{
		encContainer("web"),
		enc(nil).msg(containerField, encContainer("web")),
		enc(nil).msg(listContainersContainers, encContainer("web")).msg(listContainersContainers, encContainer("db")),
		encProcess(),
		enc(nil).msg(getTaskProcess, encProcess()),
		enc(nil).msg(listTasksTasks, encProcess()).msg(listTasksTasks, enc(nil).str(processContainerID, "db")),
		encMounts(),
		mount{Type: "bind", Source: "/s", Target: "/t", Options: []string{"rbind"}}.enc(),
		encTime(created),
		enc(nil).str(mapKey, "k").str(mapValue, "v"),
		encGetImage(),
		descriptor{MediaType: mediaOCIManifest, Digest: "sha256:00", Size: 7}.enc(),
		enc(nil).str(anyTypeURL, processTypeURL).bytes(anyValue, []byte(`{"args":["sh"]}`)),
		enc(nil).str(versionVersion, "1.6.20~ds1").str(2, "1.6.20~ds1-1+deb12u3"),
		enc(nil).uint(readContentOffset, 4096).bytes(readContentData, []byte(`{"schemaVersion":2}`)),
		unknownFields(nil),
	} {
		out = append(out, []byte(e))
	}
	return out
}

// checkTruncated checks that if dec accepts b, it refuses every prefix of
// b that ends inside a top-level field.
func checkTruncated(t *testing.T, name string, dec func([]byte) (any, error), b []byte) {
	t.Helper()
	if _, err := dec(b); err != nil {
		return
	}
	boundary := map[int]bool{0: true}
	for off := 0; off < len(b); {
		_, _, n := protowire.ConsumeField(b[off:])
		if n < 0 {
			t.Fatalf("%s accepted %x, which protowire cannot parse at %d: %v", name, b, off, protowire.ParseError(n))
		}
		off += n
		boundary[off] = true
	}
	for k := 1; k < len(b); k++ {
		if boundary[k] {
			continue
		}
		if v, err := dec(b[:k]); err == nil {
			t.Fatalf("%s accepted %x truncated to %d bytes (%x) as %#v", name, b, k, b[:k], v)
		}
	}
}

// FuzzDecode feeds arbitrary bytes to every decoder: none may panic, and a
// message one accepts, cut inside a field, is an error.
func FuzzDecode(f *testing.F) {
	for _, s := range seeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for name, dec := range decoders {
			if len(b) <= 512 {
				checkTruncated(t, name, dec, b)
			} else {
				_, _ = dec(b)
			}
		}
	})
}
