// configgen runs istiod's own config generator (Istio 1.30.4, pilot/pkg/networking/core
// NewConfigGenTest: the in-memory config store and service registry istiod's unit tests use)
// on one stack's inputs and writes, for each proxy asked for, the listeners, route
// configurations and clusters istiod would push to it, as protojson.
//
//	configgen < input.json > output.json
//
// Input (written by tools/simulate/registry.py):
//
//	{"configs": "<multi-document YAML of Istio objects>",
//	 "meshConfig": "<mesh config YAML>",
//	 "services": [{"name", "namespace", "ports": [{"name", "port", "protocol", "targetPort"}],
//	               "endpoints": [{"ip", "labels", "serviceAccount"}]}],
//	 "proxies": [{"id", "type": "sidecar"|"router", "namespace", "labels", "ip"}]}
//
// Output: {"proxies": [{"id", "listeners": [...], "routes": [...], "clusters": [...]}],
//
//	"clusterLocal": {"<hostname>": bool}}
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"istio.io/istio/pilot/pkg/config/kube/crd"
	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/pkg/networking/core"
	"istio.io/istio/pkg/config/host"
	"istio.io/istio/pkg/config/mesh"
	"istio.io/istio/pkg/config/protocol"
	"istio.io/istio/pkg/log"

	// Every Envoy extension type istiod emits, registered for protojson's Any resolution.
	_ "istio.io/istio/pkg/config/xds"
)

type portIn struct {
	Name       string `json:"name"`
	Port       int    `json:"port"`
	Protocol   string `json:"protocol"`
	TargetPort uint32 `json:"targetPort"`
}

type endpointIn struct {
	IP             string            `json:"ip"`
	Labels         map[string]string `json:"labels"`
	ServiceAccount string            `json:"serviceAccount"`
}

type serviceIn struct {
	Name      string       `json:"name"`
	Namespace string       `json:"namespace"`
	Address   string       `json:"address"`
	Ports     []portIn     `json:"ports"`
	Endpoints []endpointIn `json:"endpoints"`
}

type proxyIn struct {
	ID        string            `json:"id"`
	Type      string            `json:"type"`
	Namespace string            `json:"namespace"`
	Labels    map[string]string `json:"labels"`
	IP        string            `json:"ip"`
}

type input struct {
	Configs    string      `json:"configs"`
	MeshConfig string      `json:"meshConfig"`
	Domain     string      `json:"domain"`
	Services   []serviceIn `json:"services"`
	Proxies    []proxyIn   `json:"proxies"`
}

type proxyOut struct {
	ID        string            `json:"id"`
	Listeners []json.RawMessage `json:"listeners"`
	Routes    []json.RawMessage `json:"routes"`
	Clusters  []json.RawMessage `json:"clusters"`
}

type output struct {
	IstioVersion string          `json:"istioVersion"`
	Proxies      []proxyOut      `json:"proxies"`
	ClusterLocal map[string]bool `json:"clusterLocal"`
}

// failer is the test.Failer NewConfigGenTest reports through: any failure ends the run.
type failer struct{ cleanups []func() }

func (f *failer) Fail()             { fatal("configgen: failed") }
func (f *failer) FailNow()          { fatal("configgen: failed") }
func (f *failer) Fatal(args ...any) { fatal("configgen: " + fmt.Sprint(args...)) }
func (f *failer) Fatalf(format string, args ...any) {
	fatal("configgen: " + fmt.Sprintf(format, args...))
}
func (f *failer) Log(args ...any)     {}
func (f *failer) Logf(string, ...any) {}
func (f *failer) TempDir() string     { d, _ := os.MkdirTemp("", "configgen"); return d }
func (f *failer) Helper()             {}
func (f *failer) Cleanup(fn func())   { f.cleanups = append(f.cleanups, fn) }
func (f *failer) Skip(args ...any)    { fatal("configgen: skipped: " + fmt.Sprint(args...)) }

func fatal(msg string) {
	fmt.Fprintln(os.Stderr, strings.ReplaceAll(msg, "\n", " "))
	os.Exit(1)
}

const istioVersion = "1.30.4"

func main() {
	// istiod's logging goes to stderr (stdout carries the output), errors only: with
	// Envoy-fetched JWKS every JWT rule logs that its issuer is outside the registry.
	opts := log.DefaultOptions()
	opts.OutputPaths = []string{"stderr"}
	opts.ErrorOutputPaths = []string{"stderr"}
	opts.SetDefaultOutputLevel(log.DefaultScopeName, log.ErrorLevel)
	if err := log.Configure(opts); err != nil {
		fatal("configgen: logging: " + err.Error())
	}
	for _, s := range log.Scopes() {
		s.SetOutputLevel(log.ErrorLevel)
	}
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fatal("configgen: reading stdin: " + err.Error())
	}
	var in input
	if err := json.Unmarshal(raw, &in); err != nil {
		fatal("configgen: input is not the expected JSON: " + err.Error())
	}
	meshCfg := mesh.DefaultMeshConfig()
	if in.MeshConfig != "" {
		if meshCfg, err = mesh.ApplyMeshConfigDefaults(in.MeshConfig); err != nil {
			fatal("configgen: mesh config: " + err.Error())
		}
	}
	configs, unknown, err := crd.ParseInputs(in.Configs)
	if err != nil {
		fatal("configgen: Istio objects: " + err.Error())
	}
	domain := in.Domain
	if domain == "" {
		domain = "cluster.local"
	}
	// As istiod's Kubernetes config controller does: short hosts (`name`, as Flagger writes
	// them) resolve to `<name>.<namespace>.svc.<domain>` only with the domain set.
	for i := range configs {
		configs[i].Domain = domain
	}
	if len(unknown) > 0 {
		fatal(fmt.Sprintf("configgen: objects of kinds istiod does not read: %v", unknown))
	}
	var services []*model.Service
	var instances []*model.ServiceInstance
	for _, s := range in.Services {
		svc := &model.Service{
			Hostname:       host.Name(fmt.Sprintf("%s.%s.svc.%s", s.Name, s.Namespace, domain)),
			DefaultAddress: s.Address,
			Resolution:     model.ClientSideLB,
			Attributes: model.ServiceAttributes{
				ServiceRegistry: "Kubernetes",
				Name:            s.Name,
				Namespace:       s.Namespace,
				ExportTo:        nil,
			},
		}
		for _, p := range s.Ports {
			svc.Ports = append(svc.Ports, &model.Port{Name: p.Name, Port: p.Port, Protocol: protocol.Parse(p.Protocol)})
		}
		services = append(services, svc)
		for _, e := range s.Endpoints {
			for i, p := range s.Ports {
				target := p.TargetPort
				if target == 0 {
					target = uint32(p.Port)
				}
				instances = append(instances, &model.ServiceInstance{
					Service:     svc,
					ServicePort: svc.Ports[i],
					Endpoint: &model.IstioEndpoint{
						Addresses:       []string{e.IP},
						EndpointPort:    target,
						ServicePortName: p.Name,
						Labels:          e.Labels,
						Namespace:       s.Namespace,
						ServiceAccount:  fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", meshCfg.GetTrustDomain(), s.Namespace, e.ServiceAccount),
						TLSMode:         model.IstioMutualTLSModeLabel,
						HealthStatus:    model.Healthy,
					},
				})
			}
		}
	}
	f := &failer{}
	cg := core.NewConfigGenTest(f, core.TestOptions{
		Configs:    configs,
		MeshConfig: meshCfg,
		Services:   services,
		Instances:  instances,
	})
	out := output{IstioVersion: istioVersion, ClusterLocal: map[string]bool{}}
	for _, svc := range services {
		out.ClusterLocal[string(svc.Hostname)] = cg.PushContext().IsClusterLocal(svc)
	}
	mo := protojson.MarshalOptions{UseProtoNames: false}
	enc := func(m proto.Message) json.RawMessage {
		b, err := mo.Marshal(m)
		if err != nil {
			fatal("configgen: encoding " + string(proto.MessageName(m)) + ": " + err.Error())
		}
		return b
	}
	for _, p := range in.Proxies {
		typ := model.SidecarProxy
		if p.Type == "router" {
			typ = model.Router
		}
		labels := map[string]string{}
		for k, v := range p.Labels {
			labels[k] = v
		}
		proxy := cg.SetupProxy(&model.Proxy{
			ID:              p.ID,
			Type:            typ,
			ConfigNamespace: p.Namespace,
			Labels:          labels,
			IPAddresses:     []string{p.IP},
			DNSDomain:       p.Namespace + ".svc." + domain,
			Metadata: &model.NodeMetadata{
				IstioVersion: istioVersion,
				Namespace:    p.Namespace,
				Labels:       labels,
			},
		})
		listeners := cg.Listeners(proxy)
		routes := cg.RoutesFromListeners(proxy, listeners)
		clusters := cg.Clusters(proxy)
		sort.Slice(routes, func(i, j int) bool { return routes[i].Name < routes[j].Name })
		po := proxyOut{ID: p.ID}
		for _, l := range listeners {
			po.Listeners = append(po.Listeners, enc(l))
		}
		for _, r := range routes {
			po.Routes = append(po.Routes, enc(r))
		}
		for _, c := range clusters {
			po.Clusters = append(po.Clusters, enc(c))
		}
		out.Proxies = append(out.Proxies, po)
	}
	for _, fn := range f.cleanups {
		fn()
	}
	b, err := json.Marshal(out)
	if err != nil {
		fatal("configgen: encoding output: " + err.Error())
	}
	_, _ = os.Stdout.Write(b)
}
