// dpctl: the data-plane tier's helper binary (tools/dataplane/run.py drives it).
//
//	dpctl upstream -http ADDR -grpc ADDR   an upstream answering HTTP/1.1 (200 "ok") and gRPC
//	                                       (grpc.health.v1.Health/Check: SERVING)
//	dpctl keys -dir DIR                    a fresh RSA-2048 test key: DIR/key.pem, DIR/jwks.json
//	dpctl token -key FILE -claims JSON     an RS256 JWT over the claims, signed with the key
//	dpctl load [flags]                     open-loop load at a fixed rate, or N requests as fast as
//	                                       possible; prints one JSON summary
package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: dpctl upstream|keys|token|load ..."))
	}
	var err error
	switch os.Args[1] {
	case "upstream":
		err = upstream(os.Args[2:])
	case "keys":
		err = keys(os.Args[2:])
	case "token":
		err = token(os.Args[2:])
	case "load":
		err = load(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "dpctl:", err)
	os.Exit(2)
}

// --- upstream ---------------------------------------------------------------------------

func upstream(args []string) error {
	fs := flag.NewFlagSet("upstream", flag.ExitOnError)
	httpAddr := fs.String("http", "127.0.0.1:0", "HTTP listen address")
	grpcAddr := fs.String("grpc", "127.0.0.1:0", "gRPC listen address")
	_ = fs.Parse(args)
	hl, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		return err
	}
	gl, err := net.Listen("tcp", *grpcAddr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("x-upstream", "dpctl")
		// Echo what reached the upstream, so the harness sees headers the gateway wrote.
		if v := r.Header.Get("x-client-id"); v != "" {
			w.Header().Set("x-seen-client-id", v)
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	gs := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	go func() { _ = gs.Serve(gl) }()
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(hl) }()
	fmt.Printf("{\"http\": %q, \"grpc\": %q}\n", hl.Addr().String(), gl.Addr().String())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	gs.Stop()
	return srv.Close()
}

// --- keys and tokens --------------------------------------------------------------------

const keyID = "dataplane-test"

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func keys(args []string) error {
	fs := flag.NewFlagSet("keys", flag.ExitOnError)
	dir := fs.String("dir", ".", "output folder")
	_ = fs.Parse(args)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	der := x509.MarshalPKCS1PrivateKey(key)
	if err := os.WriteFile(filepath.Join(*dir, "key.pem"),
		pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	jwks := map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "alg": "RS256", "use": "sig", "kid": keyID,
		"n": b64(key.N.Bytes()), "e": b64(big.NewInt(int64(key.E)).Bytes()),
	}}}
	out, _ := json.Marshal(jwks)
	return os.WriteFile(filepath.Join(*dir, "jwks.json"), out, 0o644)
}

func token(args []string) error {
	fs := flag.NewFlagSet("token", flag.ExitOnError)
	keyFile := fs.String("key", "key.pem", "private key (PEM)")
	claims := fs.String("claims", "{}", "claims (JSON object); exp is added if missing")
	_ = fs.Parse(args)
	raw, err := os.ReadFile(*keyFile)
	if err != nil {
		return err
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return errors.New("no PEM block in " + *keyFile)
	}
	key, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		return err
	}
	var c map[string]any
	if err := json.Unmarshal([]byte(*claims), &c); err != nil {
		return err
	}
	if _, ok := c["exp"]; !ok {
		c["exp"] = time.Now().Add(time.Hour).Unix()
	}
	header, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": keyID})
	payload, _ := json.Marshal(c)
	signing := b64(header) + "." + b64(payload)
	digest := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:])
	if err != nil {
		return err
	}
	fmt.Println(signing + "." + b64(sig))
	return nil
}

// --- load -------------------------------------------------------------------------------

type headerFlags []string

func (h *headerFlags) String() string     { return strings.Join(*h, ",") }
func (h *headerFlags) Set(v string) error { *h = append(*h, v); return nil }

type result struct {
	status  string // HTTP status code, or "grpc:<Code>"
	limited bool   // carried the local limiter's x-local-rate-limit header
	flags   string // x-envoy-ratelimited present
	latency time.Duration
	at      time.Duration // since start, when the response arrived
}

type summary struct {
	Sent          int            `json:"sent"`
	Missed        int            `json:"missed"`
	Statuses      map[string]int `json:"statuses"`
	LocalLimited  int            `json:"local_limited"`
	StartUnix     float64        `json:"start_unix"`
	Elapsed       float64        `json:"elapsed_s"`
	AchievedRate  float64        `json:"achieved_rate"`
	P50Ms         float64        `json:"p50_ms"`
	P99Ms         float64        `json:"p99_ms"`
	AdmittedTimes []float64      `json:"admitted_at_s,omitempty"`
}

func load(args []string) error {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	target := fs.String("url", "", "http://127.0.0.1:PORT/path, or host:port with -grpc")
	grpcMode := fs.Bool("grpc", false, "call grpc.health.v1.Health/Check on -url (h2c)")
	rate := fs.Float64("rate", 0, "requests per second (open loop); 0: as fast as possible")
	duration := fs.Duration("duration", 0, "how long to send at -rate")
	count := fs.Int("n", 0, "requests to send (with -rate 0)")
	conc := fs.Int("c", 32, "concurrent requests at most")
	times := fs.Bool("times", false, "report when each admitted (2xx/OK) response arrived")
	src := fs.String("src", "", "local (source) IP address to connect from, e.g. 127.0.0.2")
	var headers headerFlags
	fs.Var(&headers, "H", "request header NAME:VALUE (repeatable)")
	_ = fs.Parse(args)
	if *target == "" || (*rate <= 0 && *count <= 0) || (*rate > 0 && *duration <= 0) {
		return errors.New("load needs -url and either -rate with -duration or -n")
	}
	if *duration > 2*time.Minute || *count > 1_000_000 || *rate > 200_000 {
		return errors.New("load: bounded to 2 minutes, 1e6 requests and 200k/s")
	}
	do, closer, err := requester(*target, *grpcMode, headers, *conc, *src)
	if err != nil {
		return err
	}
	defer closer()

	results := make(chan result, 4096)
	var wg sync.WaitGroup
	slots := make(chan struct{}, *conc)
	start := time.Now()
	sent, missed := 0, 0
	fire := func() {
		wg.Add(1)
		sent++
		go func() {
			defer func() { <-slots; wg.Done() }()
			t0 := time.Now()
			r := do()
			r.latency = time.Since(t0)
			r.at = time.Since(start)
			results <- r
		}()
	}
	var collected []result
	done := make(chan struct{})
	go func() {
		for r := range results {
			collected = append(collected, r)
		}
		close(done)
	}()
	if *rate > 0 {
		// Open loop: request i is due at start + i/rate; a due request finding every slot
		// busy is counted as missed (the generator's own ceiling), not queued.
		total := int(*rate * duration.Seconds())
		interval := time.Duration(float64(time.Second) / *rate)
		for i := 0; i < total; i++ {
			due := start.Add(time.Duration(i) * interval)
			if d := time.Until(due); d > 0 {
				time.Sleep(d)
			}
			select {
			case slots <- struct{}{}:
				fire()
			default:
				missed++
			}
		}
	} else {
		for i := 0; i < *count; i++ {
			slots <- struct{}{}
			fire()
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(results)
	<-done

	s := summary{Sent: sent, Missed: missed, Statuses: map[string]int{}, Elapsed: elapsed.Seconds(),
		StartUnix: float64(start.UnixNano()) / 1e9}
	s.AchievedRate = float64(sent) / elapsed.Seconds()
	lat := make([]float64, 0, len(collected))
	for _, r := range collected {
		s.Statuses[r.status]++
		if r.limited {
			s.LocalLimited++
		}
		lat = append(lat, float64(r.latency.Microseconds())/1000)
		if *times && (r.status == "200" || r.status == "grpc:OK") {
			s.AdmittedTimes = append(s.AdmittedTimes, r.at.Seconds())
		}
	}
	sort.Float64s(lat)
	sort.Float64s(s.AdmittedTimes)
	if n := len(lat); n > 0 {
		s.P50Ms = lat[n/2]
		s.P99Ms = lat[min(n-1, n*99/100)]
	}
	return json.NewEncoder(os.Stdout).Encode(s)
}

func requester(target string, grpcMode bool, headers headerFlags, conc int, src string) (func() result, func(), error) {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		ip := net.ParseIP(src)
		if ip == nil || !ip.IsLoopback() {
			return nil, nil, fmt.Errorf("-src %q: only loopback source addresses", src)
		}
		dialer.LocalAddr = &net.TCPAddr{IP: ip}
	}
	pairs := make([][2]string, 0, len(headers))
	for _, h := range headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			return nil, nil, fmt.Errorf("header %q is not NAME:VALUE", h)
		}
		pairs = append(pairs, [2]string{strings.TrimSpace(name), strings.TrimSpace(value)})
	}
	if grpcMode {
		// Several connections: Envoy serves each connection on one worker, and one HTTP/2
		// connection would leave the other worker idle.
		var conns []*grpc.ClientConn
		var clients []healthpb.HealthClient
		for range 4 {
			conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
					return dialer.DialContext(ctx, "tcp", addr)
				}))
			if err != nil {
				return nil, nil, err
			}
			conns = append(conns, conn)
			clients = append(clients, healthpb.NewHealthClient(conn))
		}
		var next atomic.Uint64
		md := metadata.MD{}
		for _, p := range pairs {
			md.Append(p[0], p[1])
		}
		do := func() result {
			ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(context.Background(), md), 5*time.Second)
			defer cancel()
			var hdr, trl metadata.MD
			client := clients[next.Add(1)%uint64(len(clients))]
			_, err := client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&hdr), grpc.Trailer(&trl))
			code := codes.OK
			if err != nil {
				code = status.Code(err)
			}
			limited := len(hdr.Get("x-local-rate-limit")) > 0 || len(trl.Get("x-local-rate-limit")) > 0
			return result{status: "grpc:" + code.String(), limited: limited}
		}
		return do, func() {
			for _, conn := range conns {
				_ = conn.Close()
			}
		}, nil
	}
	transport := &http.Transport{MaxIdleConnsPerHost: conc, MaxConnsPerHost: conc, DisableCompression: true,
		DialContext: dialer.DialContext}
	client := &http.Client{Transport: transport, Timeout: 5 * time.Second}
	do := func() result {
		req, err := http.NewRequest(http.MethodGet, target, bytes.NewReader(nil))
		if err != nil {
			return result{status: "error"}
		}
		for _, p := range pairs {
			if strings.EqualFold(p[0], "host") {
				req.Host = p[1]
			} else {
				req.Header.Add(p[0], p[1])
			}
		}
		resp, err := client.Do(req)
		if err != nil {
			return result{status: "error"}
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return result{status: fmt.Sprint(resp.StatusCode), limited: resp.Header.Get("x-local-rate-limit") != ""}
	}
	return do, transport.CloseIdleConnections, nil
}
