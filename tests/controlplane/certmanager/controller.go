package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	controllerpkg "github.com/cert-manager/cert-manager/pkg/controller"
	"github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	crca "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	crselfsigned "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	"github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	"github.com/cert-manager/cert-manager/pkg/controller/issuers"
	logf "github.com/cert-manager/cert-manager/pkg/logs"

	// The issuers and clusterissuers controllers look issuer kinds up in a
	// registry filled by these packages' init functions.
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

// controllerNames are the control loops this binary runs, by their upstream
// names. Each package registers its constructor under its name when it is
// imported, so importing a package above is what links a loop in; the ACME,
// Vault and Venafi loops and the ingress/gateway shims are not linked.
var controllerNames = []string{
	issuers.ControllerName,
	clusterissuers.ControllerName,
	approver.ControllerName,
	crselfsigned.CRControllerName,
	crca.CRControllerName,
	trigger.ControllerName,
	keymanager.ControllerName,
	requestmanager.ControllerName,
	issuing.ControllerName,
	readiness.ControllerName,
	revisionmanager.ControllerName,
}

// Upstream's defaults (cert-manager's controller configuration v1alpha1).
const (
	defaultKubernetesAPIQPS   = 20
	defaultKubernetesAPIBurst = 50
	minimumIssueBackoff       = time.Hour
	maximumIssueBackoff       = 32 * time.Hour
)

// copiedAnnotationPrefixes is upstream's default: every Certificate
// annotation is copied to its CertificateRequests except tool bookkeeping.
var copiedAnnotationPrefixes = []string{"*", "-kubectl.kubernetes.io/", "-fluxcd.io/", "-argocd.argoproj.io/"}

func runController(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("controller", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the API server to act on (required)")
	namespace := fs.String("namespace", "", "only act on resources in this namespace; empty means all namespaces (the clusterissuers loop then does not run)")
	clusterResourceNamespace := fs.String("cluster-resource-namespace", "kube-system", "namespace holding the Secrets that ClusterIssuers refer to")
	workers := fs.Int("workers", 5, "workers per control loop")
	if err := parseFlags(fs, kubeconfig, args); err != nil {
		return err
	}
	if *workers < 1 {
		return fmt.Errorf("--workers must be at least 1, got %d", *workers)
	}

	log := logf.Log.WithName("controller")
	ctx = logf.NewContext(ctx, log)
	factory, err := controllerpkg.NewContextFactory(ctx, controllerpkg.ContextOptions{
		Kubeconfig:         *kubeconfig,
		KubernetesAPIQPS:   defaultKubernetesAPIQPS,
		KubernetesAPIBurst: defaultKubernetesAPIBurst,
		Namespace:          *namespace,
		IssuerOptions: controllerpkg.IssuerOptions{
			ClusterResourceNamespace: *clusterResourceNamespace,
		},
		CertificateOptions: controllerpkg.CertificateOptions{
			CopiedAnnotationPrefixes:                 copiedAnnotationPrefixes,
			CertificateRequestMinimumBackoffDuration: minimumIssueBackoff,
			CertificateRequestMaximumBackoffDuration: maximumIssueBackoff,
		},
	})
	if err != nil {
		return fmt.Errorf("building the controller context: %w", err)
	}

	type loop struct {
		name string
		run  controllerpkg.Interface
	}
	known := controllerpkg.Known()
	var loops []loop
	for _, name := range controllerNames {
		if name == clusterissuers.ControllerName && *namespace != "" {
			log.Info("not starting the clusterissuers loop: scoped to one namespace", "namespace", *namespace)
			continue
		}
		construct, ok := known[name]
		if !ok {
			return fmt.Errorf("control loop %q is not registered by the linked cert-manager packages", name)
		}
		run, err := construct(factory)
		if err != nil {
			return fmt.Errorf("constructing control loop %q: %w", name, err)
		}
		loops = append(loops, loop{name, run})
	}

	// The loops registered their informers while being constructed; the
	// factories are shared, so one built context starts them all.
	shared, err := factory.Build()
	if err != nil {
		return fmt.Errorf("building the shared controller context: %w", err)
	}
	group, groupCtx := errgroup.WithContext(ctx)
	for _, l := range loops {
		group.Go(func() error {
			log.Info("starting control loop", "loop", l.name)
			if err := l.run.Run(*workers, groupCtx); err != nil {
				return fmt.Errorf("control loop %q: %w", l.name, err)
			}
			return nil
		})
	}
	shared.KubeSharedInformerFactory.Start(groupCtx.Done())
	shared.SharedInformerFactory.Start(groupCtx.Done())
	shared.HTTP01ResourceMetadataInformersFactory.Start(groupCtx.Done())
	shared.GWShared.Start(groupCtx.Done())

	err = group.Wait()
	shared.KubeSharedInformerFactory.Shutdown()
	shared.SharedInformerFactory.Shutdown()
	// A loop that stops because of a signal reports that as an error too
	// (its informer caches never synced); only an error of its own counts.
	if err != nil && ctx.Err() == nil {
		return err
	}
	log.Info("control loops stopped")
	return nil
}
