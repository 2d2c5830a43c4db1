// Command dlock-etcd is dlock with the etcd backend (etcd:// and etcds://
// URLs). It is the same command in every other way. dlock hands etcd URLs
// over to it, from next to its own executable or from $PATH, so that the
// etcd client's gRPC stack, which doubles a process's start-up time, is
// linked only where it is used. See docs/etcd.md.
package main

import (
	"context"
	"os"

	"github.com/dlock-dev/dlock/internal/cli"
	"github.com/dlock-dev/dlock/internal/etcdurl"
)

func main() {
	cli.RegisterEtcd(etcdurl.Open)
	os.Exit(cli.Main(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
