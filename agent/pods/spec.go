package pods

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"outpost.dev/agent/runtime/containerd"
	"outpost.dev/agent/runtime/seccomp"
	"outpost.dev/wire"
)

// spec translates a pod's container into the runtime's Spec.
func (w *worker) spec(o *wire.Object, rf *refs, setup *podSetup, c *wire.Container, init bool, attempt int, imageID string) (containerd.Spec, error) {
	pod := o.Pod
	env, err := w.env(o, rf, c)
	if err != nil {
		return containerd.Spec{}, err
	}
	logPath, err := w.r.logPath(o.Namespace, o.Name, o.UID, c.Name, attempt)
	if err != nil {
		return containerd.Spec{}, err
	}
	sp := containerd.Spec{
		ID:          containerID(o.UID, c.Name, attempt),
		Image:       c.Image,
		Command:     expandAll(c.Command, env),
		Args:        expandAll(c.Args, env),
		Env:         env,
		WorkingDir:  c.WorkingDir,
		MemoryLimit: c.MemoryBytes,
		CPUMillis:   c.CPUMillis,
		HostNetwork: pod.HostNetwork,
		Privileged:  c.Privileged,
		CapAdd:      c.CapAdd,
		CapDrop:     c.CapDrop,
		NetNS:       setup.netns,
		Hostname:    o.Name,
		LogPath:     logPath,
		Labels: map[string]string{
			labelPodUID: o.UID, labelPodName: o.Name, labelPodNamespace: o.Namespace,
			labelContainer: c.Name, labelAttempt: strconv.Itoa(attempt), labelHash: containerHash(c),
			labelGrace: strconv.FormatInt(pod.TerminationGracePeriodSeconds, 10), labelImageID: imageID,
		},
	}
	// securityContext
	sp.NoNewPrivileges, sp.ReadOnlyRootfs, sp.ProcUnmasked = c.NoNewPrivileges, c.ReadOnlyRootFilesystem, c.ProcUnmasked
	sp.RunAsNonRoot, sp.AdditionalGIDs, sp.Sysctls = c.RunAsNonRoot, groups(pod), sysctls(pod)
	if sp.Seccomp, err = w.seccomp(c); err != nil {
		return sp, err
	}
	if pod.Hostname != "" {
		sp.Hostname = pod.Hostname
	}
	if setup.hostname != "" {
		sp.Hostname = setup.hostname
	}
	if pod.HostNetwork {
		sp.Hostname = ""
	}
	// Namespaces, pod cgroup and terminal.
	sp.HostIPC, sp.CgroupParent, sp.TTY = pod.HostIPC(), setup.cgroup, c.TTY
	switch pod.PIDMode() {
	case wire.PIDHost:
		sp.PIDNamespace = containerd.PIDHost
	case wire.PIDPod:
		if setup.pidns == "" {
			return sp, errors.New("shareProcessNamespace: the pod's PID namespace is not set up")
		}
		sp.PIDNamespace = setup.pidns
	}
	if ns := w.targetNS[c.Name]; ns != "" {
		sp.PIDNamespace = ns // an ephemeral container's target's
	}
	if c.Stdin {
		// Kept with the pod; the attempt's own FIFO (see containerd.LabelStdin).
		dir, err := w.podDir()
		if err != nil {
			return sp, err
		}
		sp.Stdin = filepath.Join(dir, "stdin", c.Name+"-"+strconv.Itoa(attempt))
	}
	if init {
		sp.Labels[labelInit] = "true"
	}
	if w.r.cfg.LogBinary != "" || w.r.cfg.LogInAgent {
		sp.LogBinary = w.r.cfg.LogBinary
		sp.LogInAgent = w.r.cfg.LogInAgent
		sp.LogArgs = map[string]string{}
		if w.r.cfg.LogMaxSize > 0 {
			sp.LogArgs["max-size"] = strconv.FormatInt(w.r.cfg.LogMaxSize, 10)
		}
		if w.r.cfg.LogMaxFiles > 0 {
			sp.LogArgs["max-files"] = strconv.Itoa(w.r.cfg.LogMaxFiles)
		}
	}
	if c.RunAsUser != nil {
		u := &containerd.User{UID: uint32(*c.RunAsUser)}
		if c.RunAsGroup != nil {
			g := uint32(*c.RunAsGroup)
			u.GID = &g
		}
		sp.User = u
	}
	for i := range c.Mounts {
		m := &c.Mounts[i]
		src, ok := setup.volumes[m.Name]
		if !ok {
			return sp, fmt.Errorf("container %s mounts volume %q, which the pod does not define", c.Name, m.Name)
		}
		host, err := w.mountSource(src, c, i, m)
		if err != nil {
			return sp, err
		}
		mount := containerd.Mount{HostPath: host, ContainerPath: m.MountPath, ReadOnly: m.ReadOnly || src.readOnly}
		switch m.Propagation {
		case wire.PropagationHostToContainer:
			mount.Propagation = containerd.PropagationHostToContainer
		case wire.PropagationBidirectional:
			mount.Propagation = containerd.PropagationBidirectional
		}
		sp.Mounts = append(sp.Mounts, mount)
	}
	if setup.hosts != "" && !pod.HostNetwork {
		sp.Mounts = append(sp.Mounts, containerd.Mount{HostPath: setup.hosts, ContainerPath: "/etc/hosts", ReadOnly: true})
	}
	if setup.resolv != "" {
		sp.Mounts = append(sp.Mounts, containerd.Mount{HostPath: setup.resolv, ContainerPath: "/etc/resolv.conf", ReadOnly: true})
	}
	return sp, nil
}

// seccomp is the container's seccomp choice for the runtime: nil for
// RuntimeDefault, or its Localhost profile read from the node's profile
// directory (an error names the field, for the container's status).
func (w *worker) seccomp(c *wire.Container) (*containerd.Seccomp, error) {
	p := c.Seccomp
	switch {
	case p == nil || p.Type == wire.SeccompRuntimeDefault:
		return nil, nil
	case p.Type == wire.SeccompUnconfined:
		return &containerd.Seccomp{Unconfined: true}, nil
	case p.Type == wire.SeccompLocalhost:
		prof, err := seccomp.Load(w.r.cfg.SeccompDir, p.LocalhostProfile)
		if err != nil {
			return nil, fmt.Errorf("securityContext.seccompProfile.localhostProfile %q: %w", p.LocalhostProfile, err)
		}
		return &containerd.Seccomp{Profile: prof}, nil
	}
	return nil, fmt.Errorf("securityContext.seccompProfile.type %q is not RuntimeDefault, Unconfined or Localhost", p.Type)
}

// logPath is where attempt of a container logs, laid out as a kubelet
// lays out /var/log/pods. The names were checked at decode; checked again
// here, where they become a path.
func (r *Reconciler) logPath(ns, name, uid, container string, attempt int) (string, error) {
	if err := checkLogNames(ns, name, container); err != nil {
		return "", err
	}
	if err := wire.CheckUID("pod uid", uid); err != nil {
		return "", err
	}
	return filepath.Join(r.cfg.LogDir, ns+"_"+name+"_"+uid, container, strconv.Itoa(attempt)+".log"), nil
}

// checkLogNames checks the names in a log directory's path: none can
// hold "_" (the separator), "/", ".." or a glob character.
func checkLogNames(ns, pod, container string) error {
	if err := wire.CheckLabel("namespace", ns); err != nil {
		return err
	}
	if err := wire.CheckSubdomain("pod name", pod); err != nil {
		return err
	}
	if container != "" {
		return wire.CheckLabel("container name", container)
	}
	return nil
}

// podIPs are the host's IP for hostNetwork pods, and the addresses the
// pod network gave other pods (none when there is no pod network: the
// pod has loopback only).
func (w *worker) podIPs(p *wire.Pod) []string {
	if p.HostNetwork {
		if ip := w.r.getHostIP(); ip != "" {
			return []string{ip}
		}
		return nil
	}
	return w.ips
}

func (w *worker) podIP(p *wire.Pod) string {
	if ips := w.podIPs(p); len(ips) > 0 {
		return ips[0]
	}
	return ""
}

// expand replaces $(NAME) with earlier variables; $$ escapes.
func expand(s string, vals map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '$' && i+1 < len(s) {
			switch s[i+1] {
			case '$':
				b.WriteByte('$')
				i++
				continue
			case '(':
				if j := strings.IndexByte(s[i+2:], ')'); j >= 0 {
					name := s[i+2 : i+2+j]
					if v, ok := vals[name]; ok {
						b.WriteString(v)
						i += 2 + j
						continue
					}
				}
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func expandAll(ss []string, env []string) []string {
	if len(ss) == 0 {
		return ss
	}
	vals := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vals[k] = v
	}
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = expand(s, vals)
	}
	return out
}

// pullPolicy is the container's, or Kubernetes' default for its tag.
func pullPolicy(c *wire.Container) string {
	if c.ImagePullPolicy != "" {
		return c.ImagePullPolicy
	}
	ref := c.Image
	if strings.Contains(ref, "@") {
		return "IfNotPresent"
	}
	if i := strings.LastIndex(ref, ":"); i < 0 || strings.Contains(ref[i:], "/") || ref[i+1:] == "latest" {
		return "Always"
	}
	return "IfNotPresent"
}

// imageID is what status reports: the repository at the manifest digest.
func imageID(ref, digest string) string {
	if digest == "" {
		return ""
	}
	repo := ref
	if i := strings.Index(repo, "@"); i >= 0 {
		repo = repo[:i]
	} else if i := strings.LastIndex(repo, ":"); i >= 0 && !strings.Contains(repo[i:], "/") {
		repo = repo[:i]
	}
	return repo + "@" + digest
}

// pullCredentials are the registry logins of the pod's imagePullSecrets,
// in the pod's order, and a note naming those that are missing or
// unreadable, for a failed pull's message. A kubelet too pulls without a
// pull secret it cannot find rather than not at all.
func pullCredentials(o *wire.Object, rf *refs) ([]containerd.Credential, string) {
	var creds []containerd.Credential
	var notes []string
	for _, name := range o.Pod.ImagePullSecrets {
		var s *wire.Secret
		if rf != nil {
			s = rf.secrets[o.Namespace+"/"+name]
		}
		switch {
		case s == nil:
			notes = append(notes, fmt.Sprintf("imagePullSecret %q not found", name))
		case s.PullAuthError != "":
			notes = append(notes, s.PullAuthError)
		case len(s.PullAuths) == 0:
			notes = append(notes, fmt.Sprintf("imagePullSecret %q (type %q) holds no registry login", name, s.Type))
		}
		if s == nil {
			continue
		}
		for _, a := range s.PullAuths {
			creds = append(creds, containerd.Credential{Registry: a.Registry, Username: a.Username, Password: a.Password})
		}
	}
	return creds, strings.Join(notes, "; ")
}

// ensureImage makes the container's image present as its pull policy
// says, with the pod's pull secrets. It returns the image ID, or a waiting
// state and when to try again.
func (w *worker) ensureImage(ctx context.Context, rt *containerd.Runtime, o *wire.Object, rf *refs, c *wire.Container, log *slog.Logger) (string, *wire.ContainerState, time.Time) {
	policy := pullPolicy(c)
	img, err := rt.Image(ctx, c.Image)
	present := err == nil
	if present && policy != "Always" {
		return imageID(c.Image, img.Digest), nil, time.Time{}
	}
	now := w.r.now()
	if !present && policy == "Never" {
		return "", &wire.ContainerState{Kind: wire.StateWaiting, Reason: "ErrImageNeverPull",
			Message: fmt.Sprintf("Container image %q is not present with pull policy of Never", c.Image)}, now.Add(10 * time.Second)
	}
	if b := w.pulls[c.Image]; b != nil && now.Sub(b.last) < b.delay {
		return "", &wire.ContainerState{Kind: wire.StateWaiting, Reason: "ImagePullBackOff",
			Message: fmt.Sprintf("Back-off pulling image %q: %s", c.Image, b.err)}, b.last.Add(b.delay)
	}
	select {
	case w.r.pulls <- struct{}{}:
	case <-ctx.Done():
		return "", &wire.ContainerState{Kind: wire.StateWaiting, Reason: "ContainerCreating"}, now
	}
	creds, credNote := pullCredentials(o, rf)
	log.Info("pods: pulling image", "image", c.Image, "policy", policy, "pull_secrets", len(o.Pod.ImagePullSecrets))
	if credNote != "" {
		log.Warn("pods: pulling without some pull secrets", "image", c.Image, "problem", credNote)
	}
	begin := time.Now()
	lastLog := begin
	pulled, err := rt.PullWith(ctx, c.Image, creds, func(p containerd.Progress) {
		if p.Completed && p.Kind == "layer" || time.Since(lastLog) > 5*time.Second {
			lastLog = time.Now()
			log.Info("pods: pull progress", "image", c.Image, "blob", p.Digest, "kind", p.Kind, "done", p.Done, "total", p.Total, "completed", p.Completed)
		}
	})
	<-w.r.pulls
	if errors.Is(err, containerd.ErrUnavailable) {
		// Not the image's fault: the reconciler reports containerd down.
		return "", &wire.ContainerState{Kind: wire.StateWaiting, Reason: "ContainerCreating",
			Message: "waiting for containerd"}, w.r.now().Add(2 * time.Second)
	}
	if err != nil && credNote != "" {
		err = fmt.Errorf("%w (%s)", err, credNote)
	}
	if err != nil {
		if present {
			log.Warn("pods: pull failed; using the image already present (offline?)", "image", c.Image, "err", err)
			return imageID(c.Image, img.Digest), nil, time.Time{}
		}
		b := w.pulls[c.Image]
		if b == nil || w.r.now().Sub(b.last) > w.r.cfg.BackoffReset {
			b = &backoff{delay: w.r.cfg.BackoffBase}
		} else {
			b.delay = min(b.delay*2, w.r.cfg.BackoffMax)
		}
		b.last, b.err = w.r.now(), truncate(err.Error(), 500)
		w.pulls[c.Image] = b
		log.Warn("pods: pulling image failed", "image", c.Image, "err", err, "retry_in", b.delay)
		// ErrImagePull now; the next pass, within the back-off, says
		// ImagePullBackOff, as a kubelet's status does.
		return "", &wire.ContainerState{Kind: wire.StateWaiting, Reason: "ErrImagePull", Message: truncate(err.Error(), 1000)},
			w.r.now().Add(min(time.Second, b.delay/2))
	}
	delete(w.pulls, c.Image)
	log.Info("pods: image pulled", "image", c.Image, "digest", pulled.Digest, "took", time.Since(begin).Round(time.Millisecond))
	return imageID(c.Image, pulled.Digest), nil, time.Time{}
}
