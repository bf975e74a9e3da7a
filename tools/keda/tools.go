//go:build tools

// KEDA's operator and its metrics API server (cmd/adapter), kept in go.mod by `go mod tidy`; mk/kube.mk builds them by import path and
// generates the CRDs from github.com/kedacore/keda/v2/apis/... with controller-gen.
package keda

import (
	_ "github.com/kedacore/keda/v2/cmd/adapter"
	_ "github.com/kedacore/keda/v2/cmd/operator"
)
