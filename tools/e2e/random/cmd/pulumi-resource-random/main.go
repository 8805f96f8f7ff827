// Command pulumi-resource-random serves the bridged random provider with the schema that
// pulumi-tfgen-random generated beside this file at build time (ignored by git).
package main

import (
	"context"
	_ "embed"

	pf "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfbridge"

	"meshstack.local/e2e/random/info"
)

//go:embed schema.json
var schema []byte

func main() {
	pf.Main(context.Background(), "random", info.Provider(), pf.ProviderMetadata{PackageSchema: schema})
}
