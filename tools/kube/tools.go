//go:build tools

// The control plane's commands and the node's (kubelet, kube-scheduler,
// kube-proxy), kept in go.mod by `go mod tidy`; mk/kube.mk and mk/node.mk
// build them by import path.
package kube

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
