package pods

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"outpost.dev/wire"
)

func ptr[T any](v T) *T { return &v }

// defaulted is a pod the way the API server returns a minimal one: every
// default it sets is here, including the kube-api-access volume.
func defaulted() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: "uid-1", ResourceVersion: "42"},
		Spec: corev1.PodSpec{
			Volumes: []corev1.Volume{{
				Name: "kube-api-access-abcde",
				VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
					DefaultMode: ptr(int32(420)),
					Sources: []corev1.VolumeProjection{
						{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{ExpirationSeconds: ptr(int64(3607)), Path: "token"}},
						{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
							Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
						{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{
							Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}}}},
					},
				}},
			}},
			Containers: []corev1.Container{{
				Name: "app", Image: "registry.local/busybox:1",
				Ports:                    []corev1.ContainerPort{{ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
				TerminationMessagePath:   "/dev/termination-log",
				TerminationMessagePolicy: corev1.TerminationMessageReadFile,
				ImagePullPolicy:          corev1.PullIfNotPresent,
				VolumeMounts:             []corev1.VolumeMount{{Name: "kube-api-access-abcde", ReadOnly: true, MountPath: "/var/run/secrets/kubernetes.io/serviceaccount"}},
			}},
			RestartPolicy:                 corev1.RestartPolicyAlways,
			TerminationGracePeriodSeconds: ptr(int64(30)),
			DNSPolicy:                     corev1.DNSClusterFirst,
			ServiceAccountName:            "default",
			DeprecatedServiceAccount:      "default",
			NodeName:                      "edge-1",
			SecurityContext:               &corev1.PodSecurityContext{},
			SchedulerName:                 "default-scheduler",
			Tolerations: []corev1.Toleration{
				{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr(int64(300))},
				{Key: "node.kubernetes.io/unreachable", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr(int64(300))},
			},
			Priority:           ptr(int32(0)),
			EnableServiceLinks: ptr(true),
			PreemptionPolicy:   ptr(corev1.PreemptLowerPriority),
		},
		Status: corev1.PodStatus{Phase: corev1.PodPending, QOSClass: corev1.PodQOSBestEffort},
	}
}

func defaultedWire() *wire.Pod {
	return &wire.Pod{
		Volumes: []wire.Volume{{Name: "kube-api-access-abcde", Projected: &wire.Projected{DefaultMode: 420, Sources: []wire.ProjectedSource{
			{ServiceAccountToken: &wire.TokenSource{Path: "token", ExpirationSeconds: 3607}},
			{ConfigMap: &wire.FilesVolume{Name: "kube-root-ca.crt", Items: []wire.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
			{DownwardAPI: []wire.FieldFile{{Path: "namespace", Field: "metadata.namespace"}}},
		}}}},
		Containers: []wire.Container{{
			Name: "app", Image: "registry.local/busybox:1", ImagePullPolicy: "IfNotPresent",
			Mounts: []wire.VolumeMount{{Name: "kube-api-access-abcde", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true}},
		}},
		RestartPolicy:                 "Always",
		TerminationGracePeriodSeconds: 30,
		ServiceAccountName:            "default",
	}
}

func TestTranslateSupported(t *testing.T) {
	tests := []struct {
		name string
		mod  func(p *corev1.Pod)
		want func(w *wire.Pod)
	}{
		{"defaults as the API server sets them", func(*corev1.Pod) {}, func(*wire.Pod) {}},
		{"lifecycle hooks: exec, httpGet with a named port, sleep", func(p *corev1.Pod) {
			c := &p.Spec.Containers[0]
			c.Ports[0].Name = "http"
			c.Lifecycle = &corev1.Lifecycle{
				PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "touch /x"}}},
				PreStop: &corev1.LifecycleHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/drain", Port: intstr.FromString("http"),
					Host: "10.0.0.1", Scheme: corev1.URISchemeHTTPS, HTTPHeaders: []corev1.HTTPHeader{{Name: "X-A", Value: "b"}}}},
			}
			p.Spec.InitContainers = []corev1.Container{{Name: "proxy", Image: "registry.local/busybox:1", ImagePullPolicy: corev1.PullIfNotPresent,
				RestartPolicy: ptr(corev1.ContainerRestartPolicyAlways),
				Lifecycle:     &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 5}}}}}
		}, func(w *wire.Pod) {
			c := &w.Containers[0]
			c.PostStart = &wire.Handler{Exec: []string{"sh", "-c", "touch /x"}}
			c.PreStop = &wire.Handler{HTTPGet: &wire.HTTPGet{Path: "/drain", Port: 8080, Host: "10.0.0.1", HTTPS: true, Headers: [][2]string{{"X-A", "b"}}}}
			w.InitContainers = []wire.Container{{Name: "proxy", Image: "registry.local/busybox:1", ImagePullPolicy: "IfNotPresent",
				Sidecar: true, PreStop: &wire.Handler{SleepSeconds: 5}}}
		}},
		{"command, args, env, workingDir, limits", func(p *corev1.Pod) {
			c := &p.Spec.Containers[0]
			c.Command, c.Args, c.WorkingDir = []string{"/bin/sh", "-c"}, []string{"echo hi"}, "/work"
			c.Env = []corev1.EnvVar{
				{Name: "PLAIN", Value: "v"},
				{Name: "FROM_CM", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "k"}}},
				{Name: "FROM_SECRET", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "sec"}, Key: "pw", Optional: ptr(true)}}},
				{Name: "NODE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "spec.nodeName"}}},
			}
			c.Resources = corev1.ResourceRequirements{
				Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceEphemeralStorage: resource.MustParse("1Gi")},
			}
		}, func(w *wire.Pod) {
			c := &w.Containers[0]
			c.Command, c.Args, c.WorkingDir = []string{"/bin/sh", "-c"}, []string{"echo hi"}, "/work"
			c.Env = []wire.EnvVar{
				{Name: "PLAIN", Value: "v"},
				{Name: "FROM_CM", From: &wire.EnvSource{ConfigMap: &wire.KeyRef{Name: "cfg", Key: "k"}}},
				{Name: "FROM_SECRET", From: &wire.EnvSource{Secret: &wire.KeyRef{Name: "sec", Key: "pw", Optional: true}}},
				{Name: "NODE", From: &wire.EnvSource{Field: "spec.nodeName"}},
			}
			c.CPUMillis, c.MemoryBytes = 250, 64<<20
			c.RequestCPUMillis = 100 // ephemeral-storage requests only matter to the scheduler
		}},
		{"volumes", func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes,
				corev1.Volume{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: ptr(resource.MustParse("1Mi"))}}},
				corev1.Volume{Name: "dev", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/dev/i2c-1", Type: ptr(corev1.HostPathCharDev)}}},
				corev1.Volume{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, DefaultMode: ptr(int32(0o644)), Items: []corev1.KeyToPath{{Key: "a", Path: "b", Mode: ptr(int32(0o600))}}}}},
				corev1.Volume{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sec", Optional: ptr(true)}}},
				corev1.Volume{Name: "info", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
					{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}}},
			)
			p.Spec.Containers[0].VolumeMounts = append(p.Spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: "cfg", MountPath: "/etc/cfg", SubPath: "a"})
		}, func(w *wire.Pod) {
			w.Volumes = append(w.Volumes,
				wire.Volume{Name: "scratch", EmptyDir: &wire.EmptyDir{Memory: true, SizeLimit: 1 << 20}},
				wire.Volume{Name: "dev", HostPath: &wire.HostPath{Path: "/dev/i2c-1", Type: "CharDevice"}},
				wire.Volume{Name: "cfg", ConfigMap: &wire.FilesVolume{Name: "cfg", DefaultMode: 0o644, Items: []wire.KeyToPath{{Key: "a", Path: "b", Mode: 0o600}}}},
				wire.Volume{Name: "sec", Secret: &wire.FilesVolume{Name: "sec", Optional: true}},
				wire.Volume{Name: "info", Projected: &wire.Projected{Sources: []wire.ProjectedSource{{DownwardAPI: []wire.FieldFile{{Path: "name", Field: "metadata.name"}}}}}},
			)
			w.Containers[0].Mounts = append(w.Containers[0].Mounts, wire.VolumeMount{Name: "cfg", MountPath: "/etc/cfg", SubPath: "a"})
		}},
		{"mount propagation", func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes,
				corev1.Volume{Name: "root", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}},
				corev1.Volume{Name: "plugins", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/lib/plugins"}}})
			c := &p.Spec.Containers[0]
			c.SecurityContext = &corev1.SecurityContext{Privileged: ptr(true)}
			c.VolumeMounts = append(c.VolumeMounts,
				corev1.VolumeMount{Name: "root", MountPath: "/host", ReadOnly: true, MountPropagation: ptr(corev1.MountPropagationHostToContainer)},
				corev1.VolumeMount{Name: "plugins", MountPath: "/plugins", MountPropagation: ptr(corev1.MountPropagationBidirectional)},
				corev1.VolumeMount{Name: "root", MountPath: "/none", MountPropagation: ptr(corev1.MountPropagationNone)})
		}, func(w *wire.Pod) {
			w.Volumes = append(w.Volumes,
				wire.Volume{Name: "root", HostPath: &wire.HostPath{Path: "/"}},
				wire.Volume{Name: "plugins", HostPath: &wire.HostPath{Path: "/var/lib/plugins"}})
			c := &w.Containers[0]
			c.Privileged = true
			c.Mounts = append(c.Mounts,
				wire.VolumeMount{Name: "root", MountPath: "/host", ReadOnly: true, Propagation: wire.PropagationHostToContainer},
				wire.VolumeMount{Name: "plugins", MountPath: "/plugins", Propagation: wire.PropagationBidirectional},
				wire.VolumeMount{Name: "root", MountPath: "/none"})
		}},
		{"probes with a named port", func(p *corev1.Pod) {
			c := &p.Spec.Containers[0]
			c.Ports[0].Name = "http"
			c.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: "/healthz", Port: intstr.FromString("http"), Scheme: corev1.URISchemeHTTP, HTTPHeaders: []corev1.HTTPHeader{{Name: "X", Value: "y"}}}},
				PeriodSeconds: 10, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 3}
			c.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}}}
			c.StartupProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}}
		}, func(w *wire.Pod) {
			c := &w.Containers[0]
			c.LivenessProbe = &wire.Probe{HTTPGet: &wire.HTTPGet{Path: "/healthz", Port: 8080, Headers: [][2]string{{"X", "y"}}},
				PeriodSeconds: 10, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 3}
			c.ReadinessProbe = &wire.Probe{TCPPort: 8080}
			c.StartupProbe = &wire.Probe{Exec: []string{"true"}}
		}},
		{"hostNetwork with the defaulted hostPort, privileged, capabilities, users", func(p *corev1.Pod) {
			p.Spec.HostNetwork = true
			p.Spec.Containers[0].Ports[0].HostPort = 8080
			p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr(int64(1000)), RunAsNonRoot: ptr(true)}
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{
				Privileged: ptr(true), RunAsGroup: ptr(int64(20)),
				Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}, Drop: []corev1.Capability{"CAP_MKNOD"}},
			}
		}, func(w *wire.Pod) {
			w.HostNetwork = true
			c := &w.Containers[0]
			c.Privileged, c.RunAsUser, c.RunAsGroup, c.RunAsNonRoot = true, ptr(int64(1000)), ptr(int64(20)), true
			c.CapAdd, c.CapDrop = []string{"NET_ADMIN"}, []string{"MKNOD"}
		}},
		{"hostPort through portmap, DNS settings, host aliases, FQDN hostname", func(p *corev1.Pod) {
			p.Spec.Containers[0].Ports[0].HostPort = 80
			p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports, corev1.ContainerPort{ContainerPort: 53, HostPort: 5353, Protocol: corev1.ProtocolUDP, HostIP: "192.0.2.1"})
			p.Spec.DNSPolicy = corev1.DNSNone
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"192.0.2.53"}, Searches: []string{"example.org"},
				Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: ptr("2")}, {Name: "edns0"}}}
			p.Spec.HostAliases = []corev1.HostAlias{{IP: "192.0.2.7", Hostnames: []string{"broker", "broker.local"}}}
			p.Spec.Hostname, p.Spec.Subdomain, p.Spec.SetHostnameAsFQDN = "h", "sub", ptr(true)
		}, func(w *wire.Pod) {
			w.Containers[0].Ports = []wire.ContainerPort{{ContainerPort: 8080, HostPort: 80, Protocol: "TCP"}, {ContainerPort: 53, HostPort: 5353, Protocol: "UDP", HostIP: "192.0.2.1"}}
			w.DNSPolicy = "None"
			w.DNSConfig = &wire.DNSConfig{Nameservers: []string{"192.0.2.53"}, Searches: []string{"example.org"},
				Options: []wire.DNSOption{{Name: "ndots", Value: ptr("2")}, {Name: "edns0"}}}
			w.HostAliases = []wire.HostAlias{{IP: "192.0.2.7", Hostnames: []string{"broker", "broker.local"}}}
			w.Hostname, w.Subdomain, w.SetHostnameAsFQDN = "h", "sub", true
		}},
		{"seccomp: none set is nil (RuntimeDefault on the node)", func(p *corev1.Pod) {
			p.Spec.SecurityContext.SeccompProfile = nil
		}, func(w *wire.Pod) {}},
		{"seccomp: the pod's, unless the container sets its own", func(p *corev1.Pod) {
			p.Spec.SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost, LocalhostProfile: ptr("profiles/audit.json")}
			p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "busybox", ImagePullPolicy: corev1.PullAlways,
				SecurityContext: &corev1.SecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}}}}
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "rd", Image: "busybox", ImagePullPolicy: corev1.PullAlways,
				SecurityContext: &corev1.SecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}})
		}, func(w *wire.Pod) {
			w.Containers[0].Seccomp = &wire.SeccompProfile{Type: "Localhost", LocalhostProfile: "profiles/audit.json"}
			w.InitContainers = []wire.Container{{Name: "init", Image: "busybox", ImagePullPolicy: "Always", Seccomp: &wire.SeccompProfile{Type: "Unconfined"}}}
			w.Containers = append(w.Containers, wire.Container{Name: "rd", Image: "busybox", ImagePullPolicy: "Always", Seccomp: &wire.SeccompProfile{Type: "RuntimeDefault"}})
		}},
		{"allowPrivilegeEscalation: false sets no_new_privs, true and unset do not", func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{AllowPrivilegeEscalation: ptr(false)}
			p.Spec.Containers = append(p.Spec.Containers,
				corev1.Container{Name: "t", Image: "busybox", ImagePullPolicy: corev1.PullAlways, SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr(true)}},
				corev1.Container{Name: "u", Image: "busybox", ImagePullPolicy: corev1.PullAlways, SecurityContext: &corev1.SecurityContext{}})
		}, func(w *wire.Pod) {
			w.Containers[0].NoNewPrivileges = true
			w.Containers = append(w.Containers, wire.Container{Name: "t", Image: "busybox", ImagePullPolicy: "Always"},
				wire.Container{Name: "u", Image: "busybox", ImagePullPolicy: "Always"})
		}},
		{"readOnlyRootFilesystem and procMount", func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{ReadOnlyRootFilesystem: ptr(true), ProcMount: ptr(corev1.UnmaskedProcMount)}
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "d", Image: "busybox", ImagePullPolicy: corev1.PullAlways,
				SecurityContext: &corev1.SecurityContext{ReadOnlyRootFilesystem: ptr(false), ProcMount: ptr(corev1.DefaultProcMount)}})
		}, func(w *wire.Pod) {
			w.Containers[0].ReadOnlyRootFilesystem, w.Containers[0].ProcUnmasked = true, true
			w.Containers = append(w.Containers, wire.Container{Name: "d", Image: "busybox", ImagePullPolicy: "Always"})
		}},
		{"runAsNonRoot without runAsUser goes to the node (it checks the image's user); the container's wins", func(p *corev1.Pod) {
			p.Spec.SecurityContext.RunAsNonRoot = ptr(true)
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "r", Image: "busybox", ImagePullPolicy: corev1.PullAlways,
				SecurityContext: &corev1.SecurityContext{RunAsNonRoot: ptr(false)}})
		}, func(w *wire.Pod) {
			w.Containers[0].RunAsNonRoot = true
			w.Containers = append(w.Containers, wire.Container{Name: "r", Image: "busybox", ImagePullPolicy: "Always"})
		}},
		{"supplementalGroups, fsGroup, fsGroupChangePolicy, sysctls (the node decides which it allows)", func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{SupplementalGroups: []int64{3000, 4000}, FSGroup: ptr(int64(2000)),
				FSGroupChangePolicy: ptr(corev1.FSGroupChangeOnRootMismatch), SupplementalGroupsPolicy: ptr(corev1.SupplementalGroupsPolicyMerge),
				Sysctls: []corev1.Sysctl{{Name: "net.ipv4.ip_unprivileged_port_start", Value: "0"}, {Name: "kernel.msgmax", Value: "65536"}}}
		}, func(w *wire.Pod) {
			w.SupplementalGroups, w.FSGroup, w.FSGroupChangePolicy = []int64{3000, 4000}, ptr(int64(2000)), "OnRootMismatch"
			w.Sysctls = []wire.Sysctl{{Name: "net.ipv4.ip_unprivileged_port_start", Value: "0"}, {Name: "kernel.msgmax", Value: "65536"}}
		}},
		{"envFrom, downward API fields and resources, labels and annotations carried only when read", func(p *corev1.Pod) {
			p.Labels = map[string]string{"app": "web", "tier": "edge"}
			p.Annotations = map[string]string{"note": "x"}
			c := &p.Spec.Containers[0]
			c.EnvFrom = []corev1.EnvFromSource{
				{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}},
				{Prefix: "S_", SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "sec"}, Optional: ptr(true)}},
			}
			c.Env = []corev1.EnvVar{
				{Name: "APP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}}},
				{Name: "IPS", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIPs"}}},
				{Name: "MEM", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
				{Name: "CPU", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "app", Resource: "requests.cpu", Divisor: resource.MustParse("1m")}}},
			}
			c.Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("32Mi")}
			c.Stdin, c.StdinOnce, c.TTY = true, true, true
			p.Spec.ActiveDeadlineSeconds = ptr(int64(60))
			p.Spec.ShareProcessNamespace = ptr(true)
			p.Spec.HostIPC = true
			p.Spec.Resources = &corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")}}
		}, func(w *wire.Pod) {
			w.Labels = map[string]string{"app": "web", "tier": "edge"}
			c := &w.Containers[0]
			c.EnvFrom = []wire.EnvFromSource{{ConfigMap: "cfg"}, {Prefix: "S_", Secret: "sec", Optional: true}}
			c.Env = []wire.EnvVar{
				{Name: "APP", From: &wire.EnvSource{Field: "metadata.labels['app']"}},
				{Name: "IPS", From: &wire.EnvSource{Field: "status.podIPs"}},
				{Name: "MEM", From: &wire.EnvSource{Resource: &wire.ResourceRef{Resource: "limits.memory", Divisor: 1 << 20}}},
				{Name: "CPU", From: &wire.EnvSource{Resource: &wire.ResourceRef{Container: "app", Resource: "requests.cpu", Divisor: 1}}},
			}
			c.RequestCPUMillis, c.RequestMemoryBytes = 100, 32<<20
			c.Stdin, c.StdinOnce, c.TTY = true, true, true
			w.ActiveDeadlineSeconds, w.Namespaces = 60, &wire.PodNamespaces{PID: wire.PIDPod, HostIPC: true}
			w.Resources = &wire.PodResources{MemoryBytes: 128 << 20}
		}},
		{"downwardAPI volume: labels, annotations, resources; hostPID", func(p *corev1.Pod) {
			p.Labels = map[string]string{"app": "web"}
			p.Annotations = map[string]string{"note": "x"}
			p.Spec.HostPID = true
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "info", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
				Items: []corev1.DownwardAPIVolumeFile{
					{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
					{Path: "note", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations['note']"}},
					{Path: "cpu", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "app", Resource: "limits.cpu", Divisor: resource.MustParse("1")}},
				}}}})
		}, func(w *wire.Pod) {
			w.Labels = map[string]string{"app": "web"}
			w.Annotations = map[string]string{"note": "x"}
			w.Namespaces = &wire.PodNamespaces{PID: wire.PIDHost}
			w.Volumes = append(w.Volumes, wire.Volume{Name: "info", Projected: &wire.Projected{Sources: []wire.ProjectedSource{{DownwardAPI: []wire.FieldFile{
				{Path: "labels", Field: "metadata.labels"},
				{Path: "note", Field: "metadata.annotations['note']"},
				{Path: "cpu", Resource: &wire.ResourceRef{Container: "app", Resource: "limits.cpu", Divisor: 1000}},
			}}}}})
		}},
		{"init container, pull secrets, deleting", func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "busybox", ImagePullPolicy: corev1.PullAlways}}
			p.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}}
			p.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
			p.Spec.Hostname = "h"
			now := metav1.Now()
			p.DeletionTimestamp, p.DeletionGracePeriodSeconds = &now, ptr(int64(30))
			// Scheduling-only fields are accepted and not carried.
			p.Spec.NodeSelector = map[string]string{"node-role.kubernetes.io/edge": ""}
			p.Spec.Affinity = &corev1.Affinity{}
			p.Spec.PriorityClassName = "x"
			p.Spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: "x"}}
		}, func(w *wire.Pod) {
			w.InitContainers = []wire.Container{{Name: "init", Image: "busybox", ImagePullPolicy: "Always"}}
			w.ImagePullSecrets = []string{"regcred"}
			w.RestartPolicy = "OnFailure"
			w.Hostname = "h"
			w.Deleting, w.DeletionGracePeriodSeconds = true, 30
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := defaulted()
			tt.mod(p)
			want := defaultedWire()
			tt.want(want)
			got, err := Translate(p, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestTranslateUnsupported(t *testing.T) {
	c0 := func(f func(c *corev1.Container)) func(p *corev1.Pod) {
		return func(p *corev1.Pod) { f(&p.Spec.Containers[0]) }
	}
	vol := func(vs corev1.VolumeSource) func(p *corev1.Pod) {
		return func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "v", VolumeSource: vs})
		}
	}
	eph := func(f func(c *corev1.EphemeralContainerCommon)) func(p *corev1.Pod) {
		return func(p *corev1.Pod) {
			e := corev1.EphemeralContainer{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "dbg", Image: "x"}}
			f(&e.EphemeralContainerCommon)
			p.Spec.EphemeralContainers = append(p.Spec.EphemeralContainers, e)
		}
	}
	tests := []struct {
		mod  func(p *corev1.Pod)
		path string
	}{
		{vol(corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}), "spec.volumes[1].persistentVolumeClaim"},
		{vol(corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: "x"}}), "spec.volumes[1].csi"},
		{vol(corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{}}), "spec.volumes[1].ephemeral"},
		{vol(corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumHugePages}}), "spec.volumes[1].emptyDir.medium: HugePages"},
		{vol(corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{{ClusterTrustBundle: &corev1.ClusterTrustBundleProjection{Path: "x"}}}}}), "spec.volumes[1].projected.sources[0].clusterTrustBundle"},
		{c0(func(c *corev1.Container) {
			c.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt(80)}}}
		}), "spec.containers[0].lifecycle.preStop.tcpSocket"},
		{c0(func(c *corev1.Container) { c.Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{}} }), "spec.containers[0].lifecycle.postStart"},
		{c0(func(c *corev1.Container) {
			c.Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromString("nope")}}}
		}), "spec.containers[0].lifecycle.postStart.httpGet.port: nope"},
		{c0(func(c *corev1.Container) { c.Lifecycle = &corev1.Lifecycle{StopSignal: ptr(corev1.SIGKILL)} }), "spec.containers[0].lifecycle.stopSignal"},
		{func(p *corev1.Pod) { p.Spec.HostNetwork = true; p.Spec.Containers[0].Ports[0].HostPort = 80 }, "spec.containers[0].ports[0].hostPort"},
		{c0(func(c *corev1.Container) { c.Ports[0].HostIP = "192.0.2.1" }), "spec.containers[0].ports[0].hostIP"},
		{c0(func(c *corev1.Container) { c.VolumeDevices = []corev1.VolumeDevice{{Name: "d", DevicePath: "/dev/x"}} }), "spec.containers[0].volumeDevices"},
		{c0(func(c *corev1.Container) {
			c.EnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{}}}
		}), "spec.containers[0].envFrom[0].name (empty)"},
		{c0(func(c *corev1.Container) { c.EnvFrom = []corev1.EnvFromSource{{Prefix: "P_"}} }), "spec.containers[0].envFrom[0]"},
		{c0(func(c *corev1.Container) {
			c.Env = []corev1.EnvVar{{Name: "a", Value: "b"}, {Name: "E", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.ephemeral-storage"}}}}
		}), "spec.containers[0].env[1].valueFrom.resourceFieldRef.resource: limits.ephemeral-storage"},
		{c0(func(c *corev1.Container) {
			c.Env = []corev1.EnvVar{{Name: "CPU", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "nope", Resource: "limits.cpu"}}}}
		}), "env CPU.resourceFieldRef.containerName: nope"},
		{vol(corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{{Path: "c",
			ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu"}}}}}), "spec.volumes[1].downwardAPI.items[0].resourceFieldRef.containerName (empty)"},
		{vol(corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{{Path: "n",
			FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}}}}), "spec.volumes[1].downwardAPI.items[0].fieldRef.fieldPath: spec.nodeName"},
		{c0(func(c *corev1.Container) {
			c.Env = []corev1.EnvVar{{Name: "L", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}}}}
		}), "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath: metadata.labels"},
		{func(p *corev1.Pod) {
			p.Spec.Resources = &corev1.ResourceRequirements{Limits: corev1.ResourceList{"hugepages-2Mi": resource.MustParse("2Mi")}}
		}, "spec.resources.limits.hugepages-2Mi"},
		{c0(func(c *corev1.Container) {
			c.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 9000}}}
		}), "spec.containers[0].livenessProbe.grpc"},
		{c0(func(c *corev1.Container) { c.Resources.Claims = []corev1.ResourceClaim{{Name: "gpu"}} }), "spec.containers[0].resources.claims"},
		{c0(func(c *corev1.Container) {
			c.Resources.Limits = corev1.ResourceList{"nvidia.com/gpu": resource.MustParse("1")}
		}), "spec.containers[0].resources.limits.nvidia.com/gpu"},
		{c0(func(c *corev1.Container) {
			c.SecurityContext = &corev1.SecurityContext{ProcMount: ptr(corev1.ProcMountType("Partial"))}
		}), "spec.containers[0].securityContext.procMount: Partial"},
		{c0(func(c *corev1.Container) { c.VolumeMounts[0].Name = "nope" }), "spec.containers[0].volumeMounts[0].name: nope"},
		{func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "side", Image: "x", RestartPolicy: ptr(corev1.ContainerRestartPolicy("OnFailure"))}}
		}, "spec.initContainers[0].restartPolicy: OnFailure"},
		{eph(func(c *corev1.EphemeralContainerCommon) {
			c.Ports = []corev1.ContainerPort{{ContainerPort: 80}}
		}), "spec.ephemeralContainers[0].ports"},
		{eph(func(c *corev1.EphemeralContainerCommon) {
			c.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}}
		}), "spec.ephemeralContainers[0] probes"},
		{eph(func(c *corev1.EphemeralContainerCommon) {
			c.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 1}}}
		}), "spec.ephemeralContainers[0].lifecycle"},
		{eph(func(c *corev1.EphemeralContainerCommon) {
			c.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("16Mi")}
		}), "spec.ephemeralContainers[0].resources"},
		{eph(func(c *corev1.EphemeralContainerCommon) { c.RestartPolicy = ptr(corev1.ContainerRestartPolicyAlways) }),
			"spec.ephemeralContainers[0].restartPolicy"},
		{eph(func(c *corev1.EphemeralContainerCommon) {
			c.VolumeMounts = []corev1.VolumeMount{{Name: "nope", MountPath: "/x"}}
		}), "spec.ephemeralContainers[0].volumeMounts[0].name: nope"},
		{eph(func(c *corev1.EphemeralContainerCommon) { c.Name = "app" }), "spec"},
		{eph(func(c *corev1.EphemeralContainerCommon) {
			c.Env = []corev1.EnvVar{{Name: "CPU", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "nope", Resource: "limits.cpu"}}}}
		}), "env CPU.resourceFieldRef.containerName: nope"},
		{func(p *corev1.Pod) {
			p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "dbg", Image: "x"},
				TargetContainerName: "nope"}}
		}, "spec"},
		{func(p *corev1.Pod) { p.Spec.RuntimeClassName = ptr("kata") }, "spec.runtimeClassName"},
		{func(p *corev1.Pod) { p.Spec.DNSPolicy = "Cluster" }, "spec.dnsPolicy: Cluster"},
		{func(p *corev1.Pod) { p.Spec.ResourceClaims = []corev1.PodResourceClaim{{Name: "x"}} }, "spec.resourceClaims"},
		{func(p *corev1.Pod) {
			p.Spec.SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost}
		}, "spec.securityContext.seccompProfile.localhostProfile (empty)"},
		{c0(func(c *corev1.Container) {
			c.SecurityContext = &corev1.SecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: "Strict"}}
		}), "spec.containers[0].securityContext.seccompProfile.type: Strict"},
		{func(p *corev1.Pod) { p.Spec.OS = &corev1.PodOS{Name: corev1.Windows} }, "spec.os.name: windows"},
		{func(p *corev1.Pod) {
			p.Spec.SecurityContext.SupplementalGroupsPolicy = ptr(corev1.SupplementalGroupsPolicy("Other"))
		}, "spec.securityContext.supplementalGroupsPolicy: Other"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			p := defaulted()
			tt.mod(p)
			_, err := Translate(p, nil)
			var ue *UnsupportedError
			if !errors.As(err, &ue) {
				t.Fatalf("err = %v, want an UnsupportedError", err)
			}
			if ue.Path != tt.path {
				t.Errorf("path = %q, want %q", ue.Path, tt.path)
			}
			if !strings.HasPrefix(err.Error(), tt.path+" is not supported on edge nodes") {
				t.Errorf("message %q does not start with the path", err)
			}
		})
	}
}

// TestFieldsReviewed fails when k8s.io/api grows a pod or container field:
// decide whether Translate supports, ignores or refuses it, then add it
// here.
func TestFieldsReviewed(t *testing.T) {
	for typ, known := range map[reflect.Type]string{
		reflect.TypeFor[corev1.PodSpec](): "Volumes InitContainers Containers EphemeralContainers RestartPolicy TerminationGracePeriodSeconds " +
			"ActiveDeadlineSeconds DNSPolicy NodeSelector ServiceAccountName DeprecatedServiceAccount AutomountServiceAccountToken " +
			"NodeName HostNetwork HostPID HostIPC ShareProcessNamespace SecurityContext ImagePullSecrets Hostname Subdomain Affinity " +
			"SchedulerName Tolerations HostAliases PriorityClassName Priority DNSConfig ReadinessGates RuntimeClassName EnableServiceLinks " +
			"PreemptionPolicy Overhead TopologySpreadConstraints SetHostnameAsFQDN OS HostUsers SchedulingGates ResourceClaims Resources " +
			"HostnameOverride SchedulingGroup EvictionResponders",
		reflect.TypeFor[corev1.Container](): "Name Image Command Args WorkingDir Ports EnvFrom Env Resources ResizePolicy RestartPolicy " +
			"RestartPolicyRules VolumeMounts VolumeDevices LivenessProbe ReadinessProbe StartupProbe Lifecycle TerminationMessagePath " +
			"TerminationMessagePolicy ImagePullPolicy SecurityContext Stdin StdinOnce TTY",
		reflect.TypeFor[corev1.EphemeralContainer](): "EphemeralContainerCommon TargetContainerName",
		reflect.TypeFor[corev1.SecurityContext](): "Capabilities Privileged SELinuxOptions WindowsOptions RunAsUser RunAsGroup RunAsNonRoot " +
			"ReadOnlyRootFilesystem AllowPrivilegeEscalation ProcMount SeccompProfile AppArmorProfile",
		reflect.TypeFor[corev1.PodSecurityContext](): "SELinuxOptions WindowsOptions RunAsUser RunAsGroup RunAsNonRoot SupplementalGroups " +
			"SupplementalGroupsPolicy FSGroup Sysctls FSGroupChangePolicy SeccompProfile AppArmorProfile SELinuxChangePolicy",
		reflect.TypeFor[corev1.VolumeMount]():      "Name ReadOnly RecursiveReadOnly MountPath SubPath MountPropagation SubPathExpr BindMountOptions",
		reflect.TypeFor[corev1.VolumeProjection](): "Secret DownwardAPI ConfigMap ServiceAccountToken ClusterTrustBundle PodCertificate",
		reflect.TypeFor[corev1.EnvVarSource]():     "FieldRef ResourceFieldRef ConfigMapKeyRef SecretKeyRef FileKeyRef",
		reflect.TypeFor[corev1.ProbeHandler]():     "Exec HTTPGet TCPSocket GRPC",
		reflect.TypeFor[corev1.Lifecycle]():        "PostStart PreStop StopSignal",
		reflect.TypeFor[corev1.LifecycleHandler](): "Exec HTTPGet TCPSocket Sleep",
	} {
		k := map[string]bool{}
		for _, f := range strings.Fields(known) {
			k[f] = true
		}
		for i := range typ.NumField() {
			if f := typ.Field(i); !k[f.Name] {
				t.Errorf("%s.%s is new: review it in Translate and list it here", typ.Name(), f.Name)
			}
		}
	}
}

// TestTranslateEphemeral: kubectl debug's container, as the API server
// returns it once added through the pod's ephemeralcontainers subresource.
func TestTranslateEphemeral(t *testing.T) {
	p := defaulted()
	p.ResourceVersion = "43"
	p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{
		EphemeralContainerCommon: corev1.EphemeralContainerCommon{
			Name: "debugger-x7k2p", Image: "registry.local/busybox:1", Command: []string{"sh"}, Args: []string{"-c", "ps"},
			Env:   []corev1.EnvVar{{Name: "A", Value: "1"}, {Name: "S", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "dbg-sec"}, Key: "k"}}}},
			Stdin: true, StdinOnce: true, TTY: true,
			VolumeMounts:             []corev1.VolumeMount{{Name: "kube-api-access-abcde", ReadOnly: true, MountPath: "/sa"}},
			SecurityContext:          &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"SYS_PTRACE"}}, RunAsUser: ptr(int64(0))},
			TerminationMessagePath:   "/dev/termination-log",
			TerminationMessagePolicy: corev1.TerminationMessageReadFile,
			ImagePullPolicy:          corev1.PullIfNotPresent,
		},
		TargetContainerName: "app",
	}}
	got, err := Translate(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := defaultedWire()
	want.EphemeralContainers = []wire.EphemeralContainer{{
		Container: wire.Container{
			Name: "debugger-x7k2p", Image: "registry.local/busybox:1", Command: []string{"sh"}, Args: []string{"-c", "ps"},
			Env:             []wire.EnvVar{{Name: "A", Value: "1"}, {Name: "S", From: &wire.EnvSource{Secret: &wire.KeyRef{Name: "dbg-sec", Key: "k"}}}},
			ImagePullPolicy: "IfNotPresent", Stdin: true, StdinOnce: true, TTY: true,
			Mounts:    []wire.VolumeMount{{Name: "kube-api-access-abcde", MountPath: "/sa", ReadOnly: true}},
			CapAdd:    []string{"SYS_PTRACE"},
			RunAsUser: ptr(int64(0)),
		},
		Target: "app",
	}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	// Adding it leaves the pod's containers as they were: the agent's
	// spec hash of each is unchanged, so none restarts.
	before, err := Translate(defaulted(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before.Containers, got.Containers) {
		t.Errorf("containers changed: %+v, then %+v", before.Containers, got.Containers)
	}
	found := false
	for _, r := range Refs(p) {
		found = found || r == Ref{Kind: wire.KindSecret, Namespace: "default", Name: "dbg-sec"}
	}
	if !found {
		t.Errorf("Refs(%v) lacks the ephemeral container's secret", Refs(p))
	}
}

func TestRefsEnvFrom(t *testing.T) {
	p := defaulted()
	p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "busybox", EnvFrom: []corev1.EnvFromSource{
		{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "init-sec"}}}}}}
	p.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{
		{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}},
		{Prefix: "X_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}},
	}
	got := map[Ref]bool{}
	for _, r := range Refs(p) {
		got[r] = true
	}
	for _, want := range []Ref{
		{Kind: wire.KindSecret, Namespace: "default", Name: "init-sec"},
		{Kind: wire.KindConfigMap, Namespace: "default", Name: "cfg"},
		{Kind: wire.KindConfigMap, Namespace: "default", Name: "kube-root-ca.crt"},
	} {
		if !got[want] {
			t.Errorf("Refs lacks %+v (got %v)", want, got)
		}
	}
	if len(got) != 3 {
		t.Errorf("Refs = %v, want 3 without duplicates", got)
	}
}
