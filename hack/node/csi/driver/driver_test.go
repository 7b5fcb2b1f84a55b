package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// fakeMounter records mounts (the real ones need privileges: see TestHostMounter).
type fakeMounter struct{ mounts map[string]string }

func (f *fakeMounter) BindMount(source, target string, readOnly bool) error {
	f.mounts[target] = source
	return nil
}
func (f *fakeMounter) Unmount(target string) error { delete(f.mounts, target); return nil }
func (f *fakeMounter) IsMountPoint(p string) (bool, error) {
	_, ok := f.mounts[p]
	return ok, nil
}

type clients struct {
	id   csi.IdentityClient
	ctrl csi.ControllerClient
	node csi.NodeClient
	reg  registerapi.RegistrationClient
}

// serve runs the driver and its registration service on unix sockets, as main does.
func serve(t *testing.T) (clients, *Driver, *fakeMounter) {
	t.Helper()
	dir := t.TempDir()
	store := openStore(t, filepath.Join(dir, "state"))
	m := &fakeMounter{mounts: map[string]string{}}
	d := NewDriver("hostpath.csi.test", "t", "node-1", store, m)
	srv := grpc.NewServer(grpc.UnaryInterceptor(logCalls))
	csi.RegisterIdentityServer(srv, d)
	csi.RegisterControllerServer(srv, d)
	csi.RegisterNodeServer(srv, d)
	registerapi.RegisterRegistrationServer(srv, &registration{name: d.name, endpoint: "/host/csi.sock"})
	sock := filepath.Join(dir, "csi.sock")
	lis, err := listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return clients{csi.NewIdentityClient(conn), csi.NewControllerClient(conn), csi.NewNodeClient(conn),
		registerapi.NewRegistrationClient(conn)}, d, m
}

var rwo = []*csi.VolumeCapability{{
	AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
	AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
}}

func wantCode(t *testing.T, what string, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Errorf("%s: %v, want %s", what, err, code)
	}
}

func TestIdentityAndRegistration(t *testing.T) {
	c, _, _ := serve(t)
	ctx := context.Background()
	info, err := c.id.GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
	if err != nil || info.GetName() != "hostpath.csi.test" {
		t.Fatalf("GetPluginInfo: %v %v", info, err)
	}
	probe, err := c.id.Probe(ctx, &csi.ProbeRequest{})
	if err != nil || !probe.GetReady().GetValue() {
		t.Fatalf("Probe: %v %v", probe, err)
	}
	pi, err := c.reg.GetInfo(ctx, &registerapi.InfoRequest{})
	if err != nil || pi.Type != registerapi.CSIPlugin || pi.Name != "hostpath.csi.test" || pi.Endpoint != "/host/csi.sock" {
		t.Fatalf("registration GetInfo: %+v %v", pi, err)
	}
	if _, err := c.reg.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatal(err)
	}
	ni, err := c.node.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	if err != nil || ni.GetNodeId() != "node-1" || ni.GetAccessibleTopology().GetSegments()["topology.hostpath.csi.test/node"] != "node-1" {
		t.Fatalf("NodeGetInfo: %v %v", ni, err)
	}
}

func TestProvisionSnapshotRestorePublish(t *testing.T) {
	c, d, m := serve(t)
	ctx := context.Background()
	vol, err := c.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-1", VolumeCapabilities: rwo,
		CapacityRange: &csi.CapacityRange{RequiredBytes: 64 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	v := vol.GetVolume()
	if v.GetCapacityBytes() != 64<<20 || v.GetAccessibleTopology()[0].GetSegments()[d.TopologyKey()] != "node-1" {
		t.Fatalf("volume %v", v)
	}
	write(t, filepath.Join(d.store.VolumePath(v.GetVolumeId()), "f"), "hello", 0o640)

	snap, err := c.ctrl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snapshot-1", SourceVolumeId: v.GetVolumeId()})
	if err != nil {
		t.Fatal(err)
	}
	sn := snap.GetSnapshot()
	if !sn.GetReadyToUse() || sn.GetSizeBytes() != 64<<20 || sn.GetSourceVolumeId() != v.GetVolumeId() || sn.GetCreationTime() == nil {
		t.Fatalf("snapshot %v", sn)
	}
	list, err := c.ctrl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SnapshotId: sn.GetSnapshotId()})
	if err != nil || len(list.GetEntries()) != 1 {
		t.Fatalf("ListSnapshots: %v %v", list, err)
	}

	// No size asked: the snapshot's.
	restored, err := c.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-2", VolumeCapabilities: rwo,
		VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
			Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: sn.GetSnapshotId()}}}})
	if err != nil {
		t.Fatal(err)
	}
	r := restored.GetVolume()
	if r.GetCapacityBytes() != 64<<20 || r.GetContentSource().GetSnapshot().GetSnapshotId() != sn.GetSnapshotId() {
		t.Fatalf("restored %v", r)
	}
	if b, _ := os.ReadFile(filepath.Join(d.store.VolumePath(r.GetVolumeId()), "f")); string(b) != "hello" {
		t.Fatalf("restored content %q", b)
	}
	_, err = c.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-3", VolumeCapabilities: rwo,
		CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 20},
		VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
			Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: v.GetVolumeId()}}}})
	wantCode(t, "clone smaller than its source", err, codes.OutOfRange)

	target := filepath.Join(t.TempDir(), "pods", "uid", "volumes", "mount")
	pub := &csi.NodePublishVolumeRequest{VolumeId: r.GetVolumeId(), TargetPath: target, VolumeCapability: rwo[0]}
	for i := 0; i < 2; i++ { // the second is a no-op
		if _, err := c.node.NodePublishVolume(ctx, pub); err != nil {
			t.Fatal(err)
		}
	}
	if m.mounts[target] != d.store.VolumePath(r.GetVolumeId()) {
		t.Fatalf("mounts %v", m.mounts)
	}
	for i := 0; i < 2; i++ {
		if _, err := c.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: r.GetVolumeId(), TargetPath: target}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) || len(m.mounts) != 0 {
		t.Fatalf("after unpublish: %v %v", err, m.mounts)
	}

	for _, id := range []string{v.GetVolumeId(), r.GetVolumeId()} {
		if _, err := c.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.ctrl.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: sn.GetSnapshotId()}); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"volumes", "snapshots"} {
		entries, _ := os.ReadDir(filepath.Join(d.store.dir, sub))
		if len(entries) != 0 {
			t.Errorf("%s not empty after the deletes: %v", sub, entries)
		}
	}
}

func TestRequestsRefused(t *testing.T) {
	c, _, _ := serve(t)
	ctx := context.Background()
	block := []*csi.VolumeCapability{{
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: rwo[0].AccessMode,
	}}
	rwx := []*csi.VolumeCapability{{AccessType: rwo[0].AccessType,
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER}}}
	_, err := c.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{VolumeCapabilities: rwo})
	wantCode(t, "no name", err, codes.InvalidArgument)
	_, err = c.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "b", VolumeCapabilities: block})
	wantCode(t, "block", err, codes.InvalidArgument)
	_, err = c.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "m", VolumeCapabilities: rwx})
	wantCode(t, "multi-node", err, codes.InvalidArgument)
	_, err = c.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "t", VolumeCapabilities: rwo,
		AccessibilityRequirements: &csi.TopologyRequirement{Requisite: []*csi.Topology{{Segments: map[string]string{"topology.hostpath.csi.test/node": "other"}}}}})
	wantCode(t, "another node's topology", err, codes.ResourceExhausted)
	_, err = c.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "s", VolumeCapabilities: rwo,
		VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
			Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: "missing"}}}})
	wantCode(t, "unknown snapshot", err, codes.NotFound)
	_, err = c.ctrl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "s", SourceVolumeId: "missing"})
	wantCode(t, "snapshot of an unknown volume", err, codes.NotFound)
	_, err = c.ctrl.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "missing", VolumeCapabilities: rwo})
	wantCode(t, "validate an unknown volume", err, codes.NotFound)
	_, err = c.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "missing", TargetPath: "/tmp/x", VolumeCapability: rwo[0]})
	wantCode(t, "publish an unknown volume", err, codes.NotFound)
	_, err = c.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "v", TargetPath: "rel", VolumeCapability: rwo[0]})
	wantCode(t, "relative target", err, codes.InvalidArgument)

	if _, err := c.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-v", VolumeCapabilities: rwo}); err != nil {
		t.Fatal(err)
	}
	ok, err := c.ctrl.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "pvc-v", VolumeCapabilities: rwo})
	if err != nil || ok.GetConfirmed() == nil {
		t.Fatalf("validate rwo: %v %v", ok, err)
	}
	no, err := c.ctrl.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "pvc-v", VolumeCapabilities: rwx})
	if err != nil || no.GetConfirmed() != nil || no.GetMessage() == "" {
		t.Fatalf("validate rwx: %v %v", no, err)
	}
}

func TestListSnapshotsPages(t *testing.T) {
	c, _, _ := serve(t)
	ctx := context.Background()
	c.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-a", VolumeCapabilities: rwo})
	for _, n := range []string{"s1", "s2", "s3"} {
		if _, err := c.ctrl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: n, SourceVolumeId: "pvc-a"}); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	token := ""
	for i := 0; i < 5; i++ {
		page, err := c.ctrl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{MaxEntries: 2, StartingToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page.GetEntries() {
			got = append(got, e.GetSnapshot().GetSnapshotId())
		}
		if token = page.GetNextToken(); token == "" {
			break
		}
	}
	if strings.Join(got, ",") != "s1,s2,s3" {
		t.Fatalf("pages: %v", got)
	}
	_, err := c.ctrl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{StartingToken: "x"})
	wantCode(t, "bad token", err, codes.Aborted)
}

// TestHostMounter does a real bind mount (root only: the driver's pod is privileged).
func TestHostMounter(t *testing.T) {
	if os.Geteuid() != 0 {
		// CI (.ci/run) runs as root, so this runs there; a developer's non-root run skips it.
		t.Skip("needs root to mount")
	}
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "target with space")
	os.Mkdir(dst, 0o750)
	write(t, filepath.Join(src, "f"), "x", 0o644)
	m := newHostMounter()
	if mounted, _ := m.IsMountPoint(dst); mounted {
		t.Fatal("mounted before")
	}
	if err := m.BindMount(src, dst, true); err != nil {
		t.Fatalf("bind mount as root failed: %v", err)
	}
	defer m.Unmount(dst)
	if mounted, err := m.IsMountPoint(dst); !mounted || err != nil {
		t.Fatalf("IsMountPoint after mount: %v %v", mounted, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "f")); string(b) != "x" {
		t.Fatalf("through the mount: %q", b)
	}
	if err := os.WriteFile(filepath.Join(dst, "g"), nil, 0o644); err == nil {
		t.Fatal("a read-only mount took a write")
	}
	if err := m.Unmount(dst); err != nil {
		t.Fatal(err)
	}
	if mounted, _ := m.IsMountPoint(dst); mounted {
		t.Fatal("mounted after unmount")
	}
}
