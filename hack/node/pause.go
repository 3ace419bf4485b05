// pause: the sandbox ("pause") container of every pod on the real node. It holds the pod's
// namespaces, reaps orphaned children (it is PID 1 of the pod when the PID namespace is shared)
// and exits on SIGTERM or SIGINT. Built static by hack/build-node.sh, since no registry image can
// be pulled here.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range signals {
		if sig == syscall.SIGCHLD {
			for {
				var status syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		os.Exit(0)
	}
}
