// Command pulumi-resource-kubernetes serves the provider package of the pinned provider/v4 module.
// The upstream main package embeds schema-embed.json and terraform-mapping-embed.json, which its
// `go generate` writes from the committed schema.json; a package in the module cache cannot hold
// generated files, so this main embeds copies that `make e2e-tools` generates beside it (ignored
// by git) with the upstream generate.go.
package main

import (
	_ "embed"

	"github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/provider"
	"github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version"
)

//go:embed schema-embed.json
var pulumiSchema []byte

//go:embed terraform-mapping-embed.json
var terraformMapping []byte

func main() {
	provider.Serve("kubernetes", version.Version, pulumiSchema, terraformMapping)
}
