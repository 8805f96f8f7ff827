// Command pulumi-tfgen-random writes the package schema and bridge metadata of the bridged random
// provider (`pulumi-tfgen-random schema --out DIR`); make e2e-tools embeds both in
// pulumi-resource-random.
package main

import (
	pftfgen "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfgen"

	"meshstack.local/e2e/random/info"
)

func main() {
	pftfgen.Main("random", info.Provider([]byte("{}")))
}
