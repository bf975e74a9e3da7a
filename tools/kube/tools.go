//go:build tools

// The control plane's commands, kept in go.mod by `go mod tidy`; mk/kube.mk
// builds them by import path.
package kube

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
