"""`make simulate`: the stacks' traffic behaviour computed by Istio's own config generator
(tools/simulate/configgen) and judged against what the settings promise (README there)."""
