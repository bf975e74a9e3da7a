//go:build tools

// The generator and the API packages it reads, kept in go.mod by `go mod tidy`.
package crds

import (
	_ "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	_ "sigs.k8s.io/controller-tools/cmd/controller-gen"
)
