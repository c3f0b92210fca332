package pods

import (
	"context"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"outpost.dev/wire"
)

func boundClaim(name, pv string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: "pvc-uid-" + types.UID(name)},
		Spec:       corev1.PersistentVolumeClaimSpec{VolumeName: pv},
		Status:     corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound},
	}
}

func volumeFor(name, claim string, src corev1.PersistentVolumeSource) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{
			PersistentVolumeSource: src,
			ClaimRef:               &corev1.ObjectReference{Namespace: "default", Name: claim, UID: "pvc-uid-" + types.UID(claim)},
		},
	}
}

// withClaim is defaulted() with volume data from claim, mounted at /data.
func withClaim(vs corev1.VolumeSource) *corev1.Pod {
	p := defaulted()
	p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "data", VolumeSource: vs})
	p.Spec.Containers[0].VolumeMounts = append(p.Spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: "data", MountPath: "/data"})
	return p
}

func pvcSource(claim string, readOnly bool) corev1.VolumeSource {
	return corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim, ReadOnly: readOnly}}
}

func TestResolveClaims(t *testing.T) {
	socket := corev1.HostPathSocket
	local := corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: "/srv/data"}}
	hostPath := corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/run/x.sock", Type: &socket}}
	tests := []struct {
		name    string
		pod     *corev1.Pod
		objects []runtime.Object
		want    wire.Volume
	}{
		{"local", withClaim(pvcSource("data-0", false)),
			[]runtime.Object{boundClaim("data-0", "pv-1"), volumeFor("pv-1", "data-0", local)},
			wire.Volume{Name: "data", HostPath: &wire.HostPath{Path: "/srv/data", Type: "Directory"}, FSGroupOwned: true}},
		{"local read-only", withClaim(pvcSource("data-0", true)),
			[]runtime.Object{boundClaim("data-0", "pv-1"), volumeFor("pv-1", "data-0", local)},
			wire.Volume{Name: "data", HostPath: &wire.HostPath{Path: "/srv/data", Type: "Directory"}, ReadOnly: true, FSGroupOwned: true}},
		{"hostPath", withClaim(pvcSource("sock", false)),
			[]runtime.Object{boundClaim("sock", "pv-2"), volumeFor("pv-2", "sock", hostPath)},
			wire.Volume{Name: "data", HostPath: &wire.HostPath{Path: "/run/x.sock", Type: "Socket"}}},
		{"ephemeral", func() *corev1.Pod {
			return withClaim(corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{}})
		}(), []runtime.Object{func() *corev1.PersistentVolumeClaim {
			c := boundClaim("web-data", "pv-3")
			c.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: "web", UID: "uid-1", Controller: ptr(true)}}
			return c
		}(), volumeFor("pv-3", "web-data", local)},
			wire.Volume{Name: "data", HostPath: &wire.HostPath{Path: "/srv/data", Type: "Directory"}, FSGroupOwned: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := fake.NewClientset(tt.objects...)
			if !HasClaims(tt.pod) {
				t.Fatal("HasClaims = false")
			}
			claims, err := ResolveClaims(context.Background(), c.CoreV1(), tt.pod)
			if err != nil {
				t.Fatal(err)
			}
			wp, err := Translate(tt.pod, claims)
			if err != nil {
				t.Fatal(err)
			}
			got := wp.Volumes[len(wp.Volumes)-1]
			if got.Name != tt.want.Name || *got.HostPath != *tt.want.HostPath || got.ReadOnly != tt.want.ReadOnly || got.FSGroupOwned != tt.want.FSGroupOwned {
				t.Errorf("volume = %+v (hostPath %+v), want %+v (hostPath %+v)", got, got.HostPath, tt.want, tt.want.HostPath)
			}
		})
	}
}

func TestResolveClaimsWaitsOrRefuses(t *testing.T) {
	local := corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: "/srv/data"}}
	pending := boundClaim("data-0", "")
	pending.Status.Phase = corev1.ClaimPending
	block := corev1.PersistentVolumeBlock
	blockClaim := boundClaim("data-0", "pv-1")
	blockClaim.Spec.VolumeMode = &block
	notOwned := boundClaim("web-data", "pv-1")
	tests := []struct {
		name    string
		pod     *corev1.Pod
		objects []runtime.Object
		// wait is the start of a ClaimPendingError's message; refuse the
		// path of an UnsupportedError.
		wait, refuse string
	}{
		{name: "no claim", pod: withClaim(pvcSource("data-0", false)),
			wait: "spec.volumes[1].persistentVolumeClaim: waiting for its PersistentVolumeClaim: PersistentVolumeClaim data-0 does not exist"},
		{name: "unbound", pod: withClaim(pvcSource("data-0", false)), objects: []runtime.Object{pending},
			wait: "spec.volumes[1].persistentVolumeClaim: waiting for its PersistentVolumeClaim: PersistentVolumeClaim data-0 is Pending, not bound"},
		{name: "no volume", pod: withClaim(pvcSource("data-0", false)), objects: []runtime.Object{boundClaim("data-0", "pv-1")},
			wait: "spec.volumes[1].persistentVolumeClaim: waiting for its PersistentVolumeClaim: PersistentVolume pv-1 does not exist"},
		{name: "volume bound elsewhere", pod: withClaim(pvcSource("data-0", false)),
			objects: []runtime.Object{boundClaim("data-0", "pv-1"), volumeFor("pv-1", "other", local)},
			wait:    "spec.volumes[1].persistentVolumeClaim: waiting for its PersistentVolumeClaim: PersistentVolume pv-1 is not bound"},
		{name: "ephemeral claim of another pod", pod: withClaim(corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{}}),
			objects: []runtime.Object{notOwned, volumeFor("pv-1", "web-data", local)},
			wait:    "spec.volumes[1].ephemeral: waiting for its PersistentVolumeClaim: PersistentVolumeClaim web-data was not created for this pod"},
		{name: "nfs", pod: withClaim(pvcSource("data-0", false)),
			objects: []runtime.Object{boundClaim("data-0", "pv-1"), volumeFor("pv-1", "data-0", corev1.PersistentVolumeSource{NFS: &corev1.NFSVolumeSource{Server: "x", Path: "/"}})},
			refuse:  "spec.volumes[1].persistentVolumeClaim: PersistentVolume pv-1 is nfs"},
		{name: "block", pod: withClaim(pvcSource("data-0", false)), objects: []runtime.Object{blockClaim},
			refuse: "spec.volumes[1].persistentVolumeClaim: PersistentVolumeClaim data-0 volumeMode: Block"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ResolveClaims(context.Background(), fake.NewClientset(tt.objects...).CoreV1(), tt.pod)
			var pe *ClaimPendingError
			var ue *UnsupportedError
			switch {
			case tt.wait != "":
				if !errors.As(err, &pe) || !strings.HasPrefix(err.Error(), tt.wait) {
					t.Errorf("err = %v, want a ClaimPendingError starting %q", err, tt.wait)
				}
			case !errors.As(err, &ue) || ue.Path != tt.refuse:
				t.Errorf("err = %v, want an UnsupportedError with path %q", err, tt.refuse)
			}
		})
	}
	// Without resolved claims, Translate refuses the volume.
	if _, err := Translate(withClaim(pvcSource("data-0", false)), nil); err == nil || !strings.Contains(err.Error(), "spec.volumes[1].persistentVolumeClaim") {
		t.Errorf("Translate without claims: %v", err)
	}
}
