package relay

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"outpost.dev/cloud/identity"
	"outpost.dev/cloud/nodes"
	"outpost.dev/wire"
)

// CloseRevoked closes a link whose certificate was revoked: the node was
// revoked or deleted, or re-joined with a new certificate. It also closes
// a link whose certificate expired within the grace and that did not ask
// for a new one in time (serveExpired).
const CloseRevoked = 4004

// checkIdentity says why the certificate serial of node is refused, ""
// when it is accepted (see cloud/identity). The cache answers first; a
// refusal is confirmed with the API server, so a record or Node written a
// moment ago on another replica does not turn a node away. Only
// certificates the relay CA signed get here. A node that connects with a
// rotated certificate has the one it replaced dropped when prune says so.
func (s *Server) checkIdentity(ctx context.Context, node, serial string, prune bool) (int, string) {
	rec, err := s.ids.Get(ctx, node)
	if err == nil && (rec == nil || !rec.Accepts(serial)) {
		rec, err = s.ids.Fresh(ctx, node)
	}
	if err != nil {
		s.log.Error("read identity record", "node", node, "err", err)
		return http.StatusServiceUnavailable, "relay cannot read the node's identity record; reconnect later"
	}
	if why := rec.Refusal(node, serial); why != "" {
		return http.StatusForbidden, why
	}
	if prune && rec.Rotated(serial) {
		if err := s.ids.Prune(ctx, node, serial); err != nil {
			s.log.Warn("replaced certificate still accepted; dropped at the next connect", "node", node, "err", err)
		}
	}
	n, err := s.joinCache.Nodes().Get(ctx, node, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		if rec.NodeUID == "" {
			return 0, "" // joined, not connected yet: its hello creates the Node
		}
		return http.StatusForbidden, fmt.Sprintf("node %s was deleted, which revoked its certificates: %s", node, identity.RejoinHint(node))
	case err != nil:
		s.log.Error("read node", "node", node, "err", err)
		return http.StatusServiceUnavailable, "relay cannot read the node from the API server; reconnect later"
	case rec.NodeUID == "":
		// Created, but the record was not bound (a relay stopped in
		// between): bind it now.
		if err := s.ids.BindNode(ctx, node, string(n.UID)); err != nil {
			s.log.Warn("identity record not bound to its Node", "node", node, "err", err)
		}
	case string(n.UID) != rec.NodeUID:
		return http.StatusForbidden, fmt.Sprintf("node %s was deleted and created again by someone else, which revoked its certificates: %s", node, identity.RejoinHint(node))
	}
	return 0, ""
}

// createHooks keep a session from re-creating a deleted Node: the Node may
// be created only while the identity record (read from the API server)
// names no Node yet, and the one created is recorded at once.
func (s *Server) createHooks(node, serial string) nodes.CreateHooks {
	return nodes.CreateHooks{
		Before: func(ctx context.Context) error {
			rec, err := s.ids.Fresh(ctx, node)
			if err != nil {
				return err
			}
			if why := rec.Refusal(node, serial); why != "" {
				return errors.New(why)
			}
			if rec.NodeUID != "" {
				return fmt.Errorf("node %s was deleted, which revoked its certificates: %s", node, identity.RejoinHint(node))
			}
			return nil
		},
		After: func(ctx context.Context, n *corev1.Node) {
			if err := s.ids.BindNode(ctx, node, string(n.UID)); err != nil {
				s.log.Warn("identity record not bound to its Node; bound at its next connect", "node", node, "err", err)
			}
		},
	}
}

// watchRevocations closes live links as soon as this replica sees their
// certificate revoked: a record that no longer accepts the link's serial,
// or the node's edge Node deleted.
func (s *Server) watchRevocations() {
	_, _ = s.ids.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { s.recordChanged(identity.FromObject(o)) },
		UpdateFunc: func(_, o any) { s.recordChanged(identity.FromObject(o)) },
		DeleteFunc: func(o any) {
			if rec := identity.FromObject(o); rec != nil {
				s.closeNode(rec.Node, "", fmt.Sprintf("identity record of node %s deleted: %s", rec.Node, identity.RejoinHint(rec.Node)))
			}
		},
	})
	_, _ = s.joinCache.NodeInformer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(o any) {
			if n, ok := o.(*corev1.Node); ok {
				s.edgeNodeSeen(n.Name)
			}
		},
		UpdateFunc: func(_, o any) {
			if n, ok := o.(*corev1.Node); ok {
				s.edgeNodeSeen(n.Name)
				s.podCIDRsChanged(n.Name, nodeCIDRs(n))
				if readyUnknown(n) {
					s.nodeMarkedUnknown(n.Name)
				}
			}
		},
		DeleteFunc: func(o any) {
			if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			if n, ok := o.(*corev1.Node); ok {
				s.closeNode(n.Name, "", fmt.Sprintf("node %s was deleted, which revoked its certificates: %s", n.Name, identity.RejoinHint(n.Name)))
			}
		},
	})
}

// edgeNodeSeen tells node's pod sync, if it waits for its edge Node in
// the cache (pods.Config.Nodes), that the cache holds it now.
func (s *Server) edgeNodeSeen(node string) {
	if c := s.connOf(node); c != nil {
		if p := c.pods.Load(); p != nil {
			p.NodeChanged()
		}
	}
}

// connOf is node's connection to this replica, nil if it has none.
func (s *Server) connOf(node string) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns[node]
}

// readyUnknown reports whether n's Ready condition is Unknown: the node
// lifecycle controller's mark of a Node whose Lease and status it found
// stale. The relay itself never writes Unknown.
func readyUnknown(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionUnknown
		}
	}
	return false
}

// nodeMarkedUnknown tells the session of node's connection, if this
// replica holds one, that the Node was marked Unknown: it writes the
// status again, so a connected node does not stay NotReady until its
// next refresh.
func (s *Server) nodeMarkedUnknown(node string) {
	if c := s.connOf(node); c != nil {
		if ns := c.sess.Load(); ns != nil {
			ns.NodeUnknown()
		}
	}
}

func (s *Server) recordChanged(rec *identity.Record) {
	if rec == nil {
		return
	}
	c := s.connOf(rec.Node)
	if c != nil && !rec.Accepts(c.serial) {
		s.closeNode(rec.Node, c.serial, rec.Refusal(rec.Node, c.serial))
	}
}

// closeNode closes node's link (if serial is not "", only a link with that
// certificate) with CloseRevoked, telling the agent why.
func (s *Server) closeNode(node, serial, why string) {
	c := s.connOf(node)
	if c == nil || (serial != "" && c.serial != serial) {
		return
	}
	c.log.Warn("certificate revoked; closing the link", "reason", why)
	c.sendError(wire.CodeForbidden, why, true) // writes never wait
	c.close(CloseRevoked, "certificate revoked")
}
