// Command etcd is a thin wrapper around the upstream etcd server, built from
// the Go module proxy by hack/build-kube-tools.sh (go install of etcd itself
// fails because its go.mod uses relative replace directives).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
