// Command cert-manager runs cert-manager's controller or its cainjector for
// the end-to-end control plane, built from the github.com/cert-manager/cert-manager
// module. Upstream's own commands live in nested modules whose paths do not
// match their folders, so the Go module proxy cannot serve them; this is a
// small wiring of our own over the main module's packages, limited to what
// the tierguard manifests use: SelfSigned and CA issuers, Certificates, and
// CA injection into admission webhook configurations.
//
// Usage:
//
//	cert-manager controller --kubeconfig FILE [flags]
//	cert-manager cainjector --kubeconfig FILE [flags]
//	cert-manager version
//
// Both commands run until SIGINT or SIGTERM, need the cert-manager CRDs
// applied first (the cainjector waits for them, the controller's informers
// retry), and run exactly one instance each: there is no leader election and
// no metrics, health or webhook listener, so several control planes can
// share a machine. The kubeconfig's user needs cert-manager's RBAC; an admin
// (system:masters) client certificate is the simple choice in tests.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"

	logf "github.com/cert-manager/cert-manager/pkg/logs"
	"github.com/cert-manager/cert-manager/pkg/util"
)

const usage = `usage: cert-manager <controller|cainjector> --kubeconfig FILE [flags]
       cert-manager version
run "cert-manager <command> -h" for the flags of one command`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	var run func(context.Context, []string) error
	switch os.Args[1] {
	case "controller":
		run = runController
	case "cainjector":
		run = runCAInjector
	case "version":
		// Set at link time by ../build.sh from versions.env.
		fmt.Println(util.AppVersion)
		return
	case "-h", "-help", "--help", "help":
		fmt.Println(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "cert-manager: unknown command %q\n%s\n", os.Args[1], usage)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logf.InitLogs()
	err := run(ctx, os.Args[2:])
	logf.FlushLogs()
	switch {
	case errors.Is(err, flag.ErrHelp):
	case err != nil:
		fmt.Fprintf(os.Stderr, "cert-manager %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// parseFlags parses args into fs, which also receives klog's flags (-v and
// friends), and checks that --kubeconfig was given: without it client-go
// would silently fall back to in-cluster configuration, which never exists
// where this binary runs.
func parseFlags(fs *flag.FlagSet, kubeconfig *string, args []string) error {
	logFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(logFlags)
	logFlags.VisitAll(func(f *flag.Flag) { fs.Var(f.Value, f.Name, f.Usage) })
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *kubeconfig == "" {
		return errors.New("--kubeconfig is required")
	}
	if _, err := os.Stat(*kubeconfig); err != nil {
		return fmt.Errorf("--kubeconfig: %w", err)
	}
	return nil
}
