// Package kube pins the Kubernetes control-plane commands that build.sh
// compiles (kube-apiserver, kube-controller-manager); it has no code.
package kube
