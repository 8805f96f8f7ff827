// Command pulumi-resource-random serves the bridged random provider with the schema and bridge
// metadata that pulumi-tfgen-random generated beside this file at build time (ignored by git).
package main

import (
	"context"
	_ "embed"

	pf "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfbridge"

	"meshstack.local/e2e/random/info"
)

//go:embed schema.json
var schema []byte

//go:embed bridge-metadata.json
var metadata []byte

func main() {
	pf.Main(context.Background(), "random", info.Provider(metadata), pf.ProviderMetadata{PackageSchema: schema})
}
