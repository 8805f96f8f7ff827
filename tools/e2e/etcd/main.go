// Command etcd is go.etcd.io/etcd/server/v3's etcdmain, the same entry point as etcd's own main
// module (whose go.mod points at ../api, ../client and ../pkg, so it cannot be built from the
// module cache as it is).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
