// Command etcd is the etcd server, built from go.etcd.io/etcd/server/v3 in a
// module of its own so that it cannot move the API server's dependencies.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
