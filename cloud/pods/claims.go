package pods

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
)

// ReasonClaimPending is the Ready condition reason of a pod whose
// persistentVolumeClaim or ephemeral volume cannot be mounted yet (its
// claim is missing or not bound): the pod waits, as on a kubelet.
const ReasonClaimPending = "VolumeClaimPending"

// Claim is the PersistentVolume a pod volume's claim is bound to, as the
// agent mounts it: a directory of the node.
type Claim struct {
	// Path is the PersistentVolume's local.path or hostPath.path.
	Path string
	// Type is the hostPath type the agent checks: "Directory" for a local
	// PersistentVolume (a kubelet fails the mount of a missing one), the
	// PersistentVolume's own type for a hostPath one.
	Type string
	// ReadOnly is the volume's (or the PersistentVolume's) readOnly.
	ReadOnly bool
	// Local says the PersistentVolume is local: the pod's fsGroup owns
	// it, as a kubelet's local volume plugin does.
	Local bool
}

// Claims maps a pod's volume names to their resolved claims.
type Claims map[string]Claim

// ClaimPendingError says a pod's claim cannot be mounted yet; the pod
// waits and the relay tries again.
type ClaimPendingError struct {
	// Volume is the pod volume's path (spec.volumes[i]).
	Volume string
	Why    string
}

func (e *ClaimPendingError) Error() string {
	return e.Volume + ": waiting for its PersistentVolumeClaim: " + e.Why
}

// HasClaims reports whether p has persistentVolumeClaim or ephemeral
// volumes, which ResolveClaims must resolve before Translate.
func HasClaims(p *corev1.Pod) bool {
	for i := range p.Spec.Volumes {
		if vs := &p.Spec.Volumes[i].VolumeSource; vs.PersistentVolumeClaim != nil || vs.Ephemeral != nil {
			return true
		}
	}
	return false
}

// ResolveClaims reads, through c (acting as the pod's node, so the Node
// authorizer lets it read exactly the claims of the node's pods and the
// PersistentVolumes they are bound to), the claim of each
// persistentVolumeClaim and ephemeral volume of p and its
// PersistentVolume. A claim that is missing, not bound, or not yet
// readable is a *ClaimPendingError; a PersistentVolume the agent cannot
// mount (not local or hostPath, or a block device) an *UnsupportedError
// naming the volume.
func ResolveClaims(ctx context.Context, c corev1client.CoreV1Interface, p *corev1.Pod) (Claims, error) {
	var out Claims
	for i := range p.Spec.Volumes {
		v := &p.Spec.Volumes[i]
		path := fmt.Sprintf("spec.volumes[%d]", i)
		var claim string
		readOnly := false
		switch {
		case v.PersistentVolumeClaim != nil:
			path += ".persistentVolumeClaim"
			claim, readOnly = v.PersistentVolumeClaim.ClaimName, v.PersistentVolumeClaim.ReadOnly
		case v.Ephemeral != nil:
			// The ephemeral volume controller names the claim so.
			path += ".ephemeral"
			claim = p.Name + "-" + v.Name
		default:
			continue
		}
		pvc, err := c.PersistentVolumeClaims(p.Namespace).Get(ctx, claim, metav1.GetOptions{})
		if err != nil {
			return nil, pendingRead(path, "PersistentVolumeClaim "+claim, err)
		}
		if v.Ephemeral != nil && !metav1.IsControlledBy(pvc, p) {
			// As a kubelet: a claim of that name the pod does not own is
			// someone else's; the pod waits until its own replaces it.
			return nil, &ClaimPendingError{Volume: path, Why: fmt.Sprintf("PersistentVolumeClaim %s was not created for this pod", claim)}
		}
		if pvc.DeletionTimestamp != nil {
			return nil, &ClaimPendingError{Volume: path, Why: fmt.Sprintf("PersistentVolumeClaim %s is being deleted", claim)}
		}
		if pvc.Spec.VolumeName == "" || pvc.Status.Phase != corev1.ClaimBound {
			return nil, &ClaimPendingError{Volume: path, Why: fmt.Sprintf("PersistentVolumeClaim %s is %s, not bound to a PersistentVolume", claim, phaseOf(pvc))}
		}
		if pvc.Spec.VolumeMode != nil && *pvc.Spec.VolumeMode == corev1.PersistentVolumeBlock {
			return nil, unsupported(path+": PersistentVolumeClaim "+claim+" volumeMode: Block", "edge nodes mount filesystem volumes; use volumeMode Filesystem")
		}
		pv, err := c.PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
		if err != nil {
			return nil, pendingRead(path, "PersistentVolume "+pvc.Spec.VolumeName, err)
		}
		if ref := pv.Spec.ClaimRef; ref == nil || ref.Namespace != pvc.Namespace || ref.Name != pvc.Name || ref.UID != "" && ref.UID != pvc.UID {
			return nil, &ClaimPendingError{Volume: path, Why: fmt.Sprintf("PersistentVolume %s is not bound to PersistentVolumeClaim %s", pv.Name, claim)}
		}
		cl := Claim{ReadOnly: readOnly}
		switch {
		case pv.Spec.Local != nil:
			cl.Path, cl.Type, cl.Local = pv.Spec.Local.Path, string(corev1.HostPathDirectory), true
		case pv.Spec.HostPath != nil:
			cl.Path = pv.Spec.HostPath.Path
			if t := pv.Spec.HostPath.Type; t != nil {
				cl.Type = string(*t)
			}
		default:
			return nil, unsupported(fmt.Sprintf("%s: PersistentVolume %s is %s", path, pv.Name, persistentSourceName(&pv.Spec.PersistentVolumeSource)),
				"edge nodes mount local and hostPath PersistentVolumes")
		}
		if pv.Spec.VolumeMode != nil && *pv.Spec.VolumeMode == corev1.PersistentVolumeBlock {
			return nil, unsupported(fmt.Sprintf("%s: PersistentVolume %s volumeMode: Block", path, pv.Name), "edge nodes mount filesystem volumes")
		}
		if out == nil {
			out = Claims{}
		}
		out[v.Name] = cl
	}
	return out, nil
}

// pendingRead turns a failed read of what into a *ClaimPendingError: a
// missing object may yet be created, and the Node authorizer refuses a
// PersistentVolume until it has seen the claim bound to it.
func pendingRead(path, what string, err error) error {
	switch {
	case apierrors.IsNotFound(err):
		return &ClaimPendingError{Volume: path, Why: what + " does not exist"}
	case apierrors.IsForbidden(err):
		return &ClaimPendingError{Volume: path, Why: what + " may not be read by the node yet"}
	}
	return &ClaimPendingError{Volume: path, Why: fmt.Sprintf("reading %s: %v", what, err)}
}

func phaseOf(pvc *corev1.PersistentVolumeClaim) string {
	if pvc.Status.Phase == "" {
		return string(corev1.ClaimPending)
	}
	return string(pvc.Status.Phase)
}

// persistentSourceName names the source of a PersistentVolume as its JSON
// field.
func persistentSourceName(s *corev1.PersistentVolumeSource) string {
	for _, x := range []struct {
		name string
		set  bool
	}{
		{"csi", s.CSI != nil}, {"nfs", s.NFS != nil}, {"iscsi", s.ISCSI != nil}, {"fc", s.FC != nil},
		{"cephfs", s.CephFS != nil}, {"rbd", s.RBD != nil}, {"flexVolume", s.FlexVolume != nil},
		{"glusterfs", s.Glusterfs != nil}, {"gcePersistentDisk", s.GCEPersistentDisk != nil},
		{"awsElasticBlockStore", s.AWSElasticBlockStore != nil}, {"azureDisk", s.AzureDisk != nil},
		{"azureFile", s.AzureFile != nil}, {"cinder", s.Cinder != nil}, {"vsphereVolume", s.VsphereVolume != nil},
		{"portworxVolume", s.PortworxVolume != nil}, {"scaleIO", s.ScaleIO != nil}, {"storageos", s.StorageOS != nil},
		{"quobyte", s.Quobyte != nil}, {"flocker", s.Flocker != nil}, {"photonPersistentDisk", s.PhotonPersistentDisk != nil},
	} {
		if x.set {
			return x.name
		}
	}
	return "of an unknown source"
}

// isClaimPending reports a *ClaimPendingError.
func isClaimPending(err error) bool {
	var e *ClaimPendingError
	return errors.As(err, &e)
}
