// Package info is the bridge mapping of the Terraform random provider to the `random` Pulumi
// package, with the tokens pulumi-random uses (random:index/randomPassword:RandomPassword ...),
// so the pulumi_random Python SDK talks to it unchanged. The pulumi-random provider module is not
// served by the module proxy reachable here; this mapping is written for meshstack's e2e harness.
package info

import (
	"context"
	"errors"

	pf "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge/tokens"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/terraform-providers/terraform-provider-random/shim"
)

// Version is set by the build (-ldflags -X).
var Version = "0.0.0"

// Provider returns the bridge's provider info. metadata is bridge-metadata.json as written by
// `pulumi-tfgen-random schema` (the generator itself starts from "{}").
func Provider(metadata []byte) tfbridge.ProviderInfo {
	prov := tfbridge.ProviderInfo{
		P:            pf.ShimProvider(shim.NewProvider()),
		Name:         "random",
		Description:  "Randomness for Pulumi programs (Terraform random provider, bridged for meshstack e2e).",
		License:      "Apache-2.0",
		Version:      Version,
		MetadataInfo: tfbridge.NewProviderMetadata(metadata),
		Resources: map[string]*tfbridge.ResourceInfo{
			"random_bytes": {ComputeID: randomBytesID},
		},
		EnableAccurateBridgePreview: true,
	}
	makeToken := func(module, name string) (string, error) {
		return tokens.MakeStandard("random")(module, "Random"+name)
	}
	prov.MustComputeTokens(tokens.SingleModule("random_", "index", makeToken))
	return prov
}

// random_bytes has no id attribute: its id is its base64 value.
func randomBytesID(_ context.Context, state resource.PropertyMap) (resource.ID, error) {
	b, ok := state["base64"]
	if !ok {
		return "", errors.New("random_bytes: no base64 property in state")
	}
	if b.IsSecret() {
		b = b.SecretValue().Element
	}
	if !b.IsString() {
		return "", errors.New("random_bytes: base64 is not a string")
	}
	return resource.ID(b.StringValue()), nil
}
