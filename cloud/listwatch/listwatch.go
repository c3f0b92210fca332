// Package listwatch builds the ListerWatchers of the relay's informers: one
// typed (or dynamic) client's List and Watch with a field or label selector
// set on every request, as the kubelet's per-node watches do. client-go's
// own NewFilteredListWatchFromClient needs a REST client, which the fake
// clientsets of the unit tests do not have.
package listwatch

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	corev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
)

// API is the List and Watch of one resource's client, such as
// CoreV1().Pods(ns) or a dynamic ResourceInterface.
type API[L runtime.Object] interface {
	List(context.Context, metav1.ListOptions) (L, error)
	Watch(context.Context, metav1.ListOptions) (watch.Interface, error)
}

// Selected lists and watches through api with fieldSelector and
// labelSelector set ("" leaves one unset). client is the clientset api
// comes from; it says whether the server's watch-list semantics apply.
func Selected[L runtime.Object](client any, api API[L], fieldSelector, labelSelector string) cache.ListerWatcher {
	set := func(o *metav1.ListOptions) {
		if fieldSelector != "" {
			o.FieldSelector = fieldSelector
		}
		if labelSelector != "" {
			o.LabelSelector = labelSelector
		}
	}
	return cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			set(&o)
			return api.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			set(&o)
			return api.Watch(ctx, o)
		},
	}, client)
}

// OnNode is the field selector of the objects bound to node.
func OnNode(node string) string {
	return fields.OneTermEqualSelector("spec.nodeName", node).String()
}

// Core is a client with the core API group: a kubernetes.Interface, or
// the client acting as a node (package asnode).
type Core interface {
	CoreV1() corev1.CoreV1Interface
}

// PodsOnNode lists and watches the pods bound to node, in every namespace.
// The Node authorizer lets node itself do exactly this (the field
// selector is what it checks).
func PodsOnNode(c Core, node string) cache.ListerWatcher {
	return Selected(c, c.CoreV1().Pods(metav1.NamespaceAll), OnNode(node), "")
}
