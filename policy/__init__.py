"""meshstack's Pulumi policy pack (`pulumi preview --policy-pack policy`) and its offline runner."""
