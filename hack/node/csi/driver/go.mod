// replicator-csi-hostpath: the node's own minimal CSI hostpath driver with
// snapshots (hack/node/csi-tools.sh builds it). Dependencies from the Go module
// proxy only.
module replicator-operator/hack/node/csi/driver

go 1.26.0

require (
	github.com/container-storage-interface/spec v1.13.0
	google.golang.org/grpc v1.84.0
	google.golang.org/protobuf v1.36.11
	k8s.io/kubelet v0.31.14
)

require (
	github.com/gogo/protobuf v1.3.2 // indirect
	golang.org/x/net v0.57.0 // indirect
	golang.org/x/sys v0.47.0 // indirect
	golang.org/x/text v0.40.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260706201446-f0a921348800 // indirect
)
