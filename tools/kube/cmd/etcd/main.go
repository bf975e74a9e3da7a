// Command etcd is etcd's own server (etcdmain), at the version kube-apiserver
// v1.33 is built and tested with.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
