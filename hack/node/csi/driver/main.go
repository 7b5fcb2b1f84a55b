// replicator-csi-hostpath: a minimal CSI driver for a single-node test
// cluster. Volumes are directories below --statedir, snapshots full copies of
// them (cp -a: owners, modes, links kept), their metadata one JSON file. It
// serves CSI Identity, Controller and Node on --endpoint and, with
// --registration-dir, registers itself with the kubelet's plugin watcher (no
// node-driver-registrar needed).
//
//	replicator-csi-hostpath --nodeid=NODE --endpoint=unix:///csi/csi.sock \
//	  --statedir=/var/lib/replicator-csi \
//	  --registration-dir=/registration \
//	  --kubelet-registration-path=/var/lib/kubelet/plugins/replicator-csi/csi.sock
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

var version = "dev"

const defaultDriverName = "hostpath.csi.replicator.dev"

func main() {
	var (
		endpoint     = flag.String("endpoint", "unix:///csi/csi.sock", "the CSI socket (unix:///path or a path)")
		driverName   = flag.String("drivername", defaultDriverName, "the CSI driver's name")
		nodeID       = flag.String("nodeid", "", "this node's name (required)")
		stateDir     = flag.String("statedir", "/var/lib/replicator-csi", "where volumes, snapshots and state.json live")
		regDir       = flag.String("registration-dir", "", "the kubelet's plugins_registry directory as this process sees it (empty: do not register)")
		kubeletPath  = flag.String("kubelet-registration-path", "", "the CSI socket's path as the kubelet sees it (default: the endpoint's path)")
		printVersion = flag.Bool("version", false, "print the version and exit")
	)
	flag.Parse()
	if *printVersion {
		fmt.Println(version)
		return
	}
	log.SetFlags(log.LstdFlags | log.Lmicroseconds | log.LUTC)
	if err := run(*endpoint, *driverName, *nodeID, *stateDir, *regDir, *kubeletPath); err != nil {
		log.Fatal(err)
	}
}

func socketPath(endpoint string) (string, error) {
	p := strings.TrimPrefix(endpoint, "unix://")
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("endpoint %q: want unix:///absolute/path", endpoint)
	}
	return p, nil
}

// listen removes a stale socket and listens on a new one.
func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return net.Listen("unix", path)
}

// logCalls logs every call but the frequent, uneventful ones, with its outcome and duration.
func logCalls(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	name := methodName(info.FullMethod)
	quiet := map[string]bool{"Probe": true, "NodeGetCapabilities": true, "GetPluginInfo": true,
		"GetPluginCapabilities": true, "ControllerGetCapabilities": true}
	if err != nil || !quiet[name] {
		outcome := "ok"
		if err != nil {
			outcome = err.Error()
		}
		log.Printf("%s %s: %s (%s)", name, summary(req), outcome, time.Since(start).Round(time.Millisecond))
	}
	return resp, err
}

// summary: the identifying fields of a request, for the log.
func summary(req any) string {
	switch r := req.(type) {
	case *csi.CreateVolumeRequest:
		return fmt.Sprintf("name=%s bytes=%d source=%v", r.GetName(), r.GetCapacityRange().GetRequiredBytes(), r.GetVolumeContentSource())
	case *csi.DeleteVolumeRequest:
		return "volume=" + r.GetVolumeId()
	case *csi.CreateSnapshotRequest:
		return fmt.Sprintf("name=%s volume=%s", r.GetName(), r.GetSourceVolumeId())
	case *csi.DeleteSnapshotRequest:
		return "snapshot=" + r.GetSnapshotId()
	case *csi.NodePublishVolumeRequest:
		return fmt.Sprintf("volume=%s target=%s readonly=%v", r.GetVolumeId(), r.GetTargetPath(), r.GetReadonly())
	case *csi.NodeUnpublishVolumeRequest:
		return fmt.Sprintf("volume=%s target=%s", r.GetVolumeId(), r.GetTargetPath())
	}
	return ""
}

func run(endpoint, name, nodeID, stateDir, regDir, kubeletPath string) error {
	if nodeID == "" {
		return errors.New("--nodeid is required")
	}
	sock, err := socketPath(endpoint)
	if err != nil {
		return err
	}
	store, err := OpenStore(stateDir)
	if err != nil {
		return err
	}
	d := NewDriver(name, version, nodeID, store, newHostMounter())

	srv := grpc.NewServer(grpc.UnaryInterceptor(logCalls))
	csi.RegisterIdentityServer(srv, d)
	csi.RegisterControllerServer(srv, d)
	csi.RegisterNodeServer(srv, d)
	lis, err := listen(sock)
	if err != nil {
		return err
	}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(lis) }()
	log.Printf("%s %s serving CSI on %s (node %s, state %s)", name, version, sock, nodeID, stateDir)

	var reg *grpc.Server
	var regSock string
	if regDir != "" {
		if kubeletPath == "" {
			kubeletPath = sock
		}
		regSock = filepath.Join(regDir, name+"-reg.sock")
		rl, err := listen(regSock)
		if err != nil {
			return err
		}
		reg = grpc.NewServer()
		registerapi.RegisterRegistrationServer(reg, &registration{name: name, endpoint: kubeletPath,
			failed: func(reason string) { errc <- fmt.Errorf("the kubelet refused the registration: %s", reason) }})
		go func() { errc <- reg.Serve(rl) }()
		log.Printf("registration service on %s", regSock)
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sigs:
		log.Printf("%s: stopping", s)
		err = nil
	case err = <-errc:
	}
	// The registration socket first: its removal deregisters the driver.
	if reg != nil {
		os.Remove(regSock)
		reg.Stop()
	}
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		srv.Stop()
	}
	os.Remove(sock)
	return err
}
