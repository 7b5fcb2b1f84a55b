//go:build tools

// Package tools pins the command built from this wrapper module.
package tools

import _ "github.com/kubernetes-csi/external-provisioner/v5/cmd/csi-provisioner"
