//go:build tools

// KEDA's operator, kept in go.mod by `go mod tidy`; mk/kube.mk builds it by import path and
// generates the CRDs from github.com/kedacore/keda/v2/apis/... with controller-gen.
package keda

import _ "github.com/kedacore/keda/v2/cmd/operator"
