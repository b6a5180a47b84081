// Command standin plays the two kubernetes-csi sidecars that the Go module proxy does not
// serve (node-driver-registrar and livenessprobe), so that the lab cluster runs the chart
// unchanged. Which one it is comes from the name it is started under
// (/csi-node-driver-registrar or /livenessprobe, the upstream images' entry points); it
// takes the upstream flags the chart passes. Lab use only: the node plugin's own
// registration with kubelet replaces the first.
package main

import (
	"context"
	"errors"
	"flag"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

func main() {
	csiAddress := flag.String("csi-address", "/run/csi/socket", "the CSI driver's socket")
	regPath := flag.String("kubelet-registration-path", "", "the driver's socket as kubelet sees it")
	httpEndpoint := flag.String("http-endpoint", "", "address of the registrar's /healthz")
	healthPort := flag.String("health-port", "9808", "port of the livenessprobe's /healthz")
	probeTimeout := flag.Duration("probe-timeout", time.Second, "limit of one Probe call")
	flag.Int("v", 0, "log verbosity (ignored)")
	flag.Parse()

	conn := dial(*csiAddress)
	if strings.HasSuffix(os.Args[0], "registrar") {
		registrar(conn, *regPath, *httpEndpoint)
	} else {
		liveness(conn, ":"+*healthPort, *probeTimeout)
	}
}

func dial(address string) *grpc.ClientConn {
	if !strings.HasPrefix(address, "unix://") {
		address = "unix://" + address
	}
	conn, err := grpc.NewClient(address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatalf("CSI socket %s: %v", address, err)
	}
	return conn
}

// driverName asks the driver, retrying until it answers (it may start after us).
func driverName(conn *grpc.ClientConn) string {
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		info, err := csi.NewIdentityClient(conn).GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
		cancel()
		if err == nil {
			return info.GetName()
		}
		log.Printf("GetPluginInfo: %v (retrying)", err)
		time.Sleep(2 * time.Second)
	}
}

type registration struct {
	registerapi.UnimplementedRegistrationServer
	name, endpoint string
}

func (r *registration) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              r.name,
		Endpoint:          r.endpoint,
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

func (r *registration) NotifyRegistrationStatus(_ context.Context, s *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if !s.PluginRegistered {
		log.Printf("kubelet refused the registration: %s", s.Error)
	} else {
		log.Printf("registered with kubelet")
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

func registrar(conn *grpc.ClientConn, endpoint, httpEndpoint string) {
	if endpoint == "" {
		log.Fatal("--kubelet-registration-path is required")
	}
	name := driverName(conn)
	socket := filepath.Join("/registration", name+"-reg.sock")
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.Fatalf("removing %s: %v", socket, err)
	}
	lis, err := net.Listen("unix", socket)
	if err != nil {
		log.Fatalf("listening on %s: %v", socket, err)
	}
	if httpEndpoint != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
			if _, err := os.Stat(socket); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.Write([]byte("ok"))
		})
		go func() { log.Fatal(http.ListenAndServe(httpEndpoint, mux)) }()
	}
	server := grpc.NewServer()
	registerapi.RegisterRegistrationServer(server, &registration{name: name, endpoint: endpoint})
	log.Printf("registration socket %s for %s at %s", socket, name, endpoint)
	log.Fatal(server.Serve(lis))
}

func liveness(conn *grpc.ClientConn, address string, timeout time.Duration) {
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		resp, err := csi.NewIdentityClient(conn).Probe(ctx, &csi.ProbeRequest{})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if ready := resp.GetReady(); ready != nil && !ready.GetValue() {
			http.Error(w, "driver not ready", http.StatusInternalServerError)
			return
		}
		w.Write([]byte("ok"))
	})
	log.Printf("/healthz on %s", address)
	log.Fatal(http.ListenAndServe(address, nil))
}
