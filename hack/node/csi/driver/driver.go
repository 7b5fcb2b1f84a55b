package main

// The CSI services (spec v1.x): Identity, Controller and Node of a single-node
// hostpath driver over the Store. The controller and the node run in one
// process on the one node, so a volume's accessible topology is that node.

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const defaultCapacity = 1 << 30 // a claim that asks for no size gets 1 GiB (recorded, not enforced)

type Driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer
	csi.UnimplementedNodeServer

	name, version, nodeID string
	store                 *Store
	// mounter does the node's bind mounts (a fake in tests that run unprivileged).
	mounter Mounter
}

func NewDriver(name, version, nodeID string, store *Store, m Mounter) *Driver {
	return &Driver{name: name, version: version, nodeID: nodeID, store: store, mounter: m}
}

// TopologyKey is the node label the kubelet sets from NodeGetInfo; volumes are
// accessible from the node whose name it carries.
func (d *Driver) TopologyKey() string { return "topology." + d.name + "/node" }

func (d *Driver) topology() *csi.Topology {
	return &csi.Topology{Segments: map[string]string{d.TopologyKey(): d.nodeID}}
}

// storeErr maps the Store's errors to gRPC codes.
func storeErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrAlreadyExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, ErrOutOfRange):
		return status.Error(codes.OutOfRange, err.Error())
	case errors.Is(err, ErrBusy):
		// The CSI spec's answer to an operation pending on the same volume: retry.
		return status.Error(codes.Aborted, err.Error())
	default:
		return status.Error(codes.Internal, err.Error())
	}
}

// ---------------------------------------------------------------- Identity

func (d *Driver) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: d.name, VendorVersion: d.version}, nil
}

func (d *Driver) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	caps := []csi.PluginCapability_Service_Type{
		csi.PluginCapability_Service_CONTROLLER_SERVICE,
		csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS,
	}
	out := &csi.GetPluginCapabilitiesResponse{}
	for _, c := range caps {
		out.Capabilities = append(out.Capabilities, &csi.PluginCapability{
			Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{Type: c}}})
	}
	return out, nil
}

func (d *Driver) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(true)}, nil
}

// ---------------------------------------------------------------- Controller

// supported: a filesystem (mount) volume used from one node. No raw block
// devices; no multi-node modes (there is one node, and saying otherwise would
// promise what a real cluster's hostpath cannot keep).
func supported(c *csi.VolumeCapability) bool {
	if c == nil || c.GetMount() == nil || c.GetAccessMode() == nil {
		return false
	}
	switch c.GetAccessMode().GetMode() {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY:
		return true
	}
	return false
}

func checkCapabilities(caps []*csi.VolumeCapability) error {
	if len(caps) == 0 {
		return status.Error(codes.InvalidArgument, "volume capabilities missing")
	}
	for _, c := range caps {
		if !supported(c) {
			return status.Errorf(codes.InvalidArgument, "unsupported volume capability %v: only mount volumes, single-node access", c)
		}
	}
	return nil
}

func (d *Driver) CreateVolume(_ context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name missing")
	}
	if err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
		return nil, err
	}
	if ar := req.GetAccessibilityRequirements(); ar != nil && len(ar.GetRequisite()) > 0 {
		ok := false
		for _, t := range ar.GetRequisite() {
			if v, has := t.GetSegments()[d.TopologyKey()]; has && v == d.nodeID {
				ok = true
			}
		}
		if !ok {
			return nil, status.Errorf(codes.ResourceExhausted, "no requisite topology includes node %s", d.nodeID)
		}
	}
	var src Source
	if cs := req.GetVolumeContentSource(); cs != nil {
		switch {
		case cs.GetSnapshot() != nil:
			src.SnapshotID = cs.GetSnapshot().GetSnapshotId()
		case cs.GetVolume() != nil:
			src.VolumeID = cs.GetVolume().GetVolumeId()
		default:
			return nil, status.Error(codes.InvalidArgument, "unknown volume content source")
		}
	}
	capacity := req.GetCapacityRange().GetRequiredBytes()
	limit := req.GetCapacityRange().GetLimitBytes()
	if limit > 0 && capacity > limit {
		return nil, status.Errorf(codes.InvalidArgument, "required %d bytes > limit %d", capacity, limit)
	}
	if capacity == 0 {
		// The source's size when there is one, else the default, within the limit.
		capacity = defaultCapacity
		if sn, ok := d.store.GetSnapshot(src.SnapshotID); ok {
			capacity = sn.SizeBytes
		} else if v, ok := d.store.GetVolume(src.VolumeID); ok {
			capacity = v.CapacityBytes
		}
		if limit > 0 && capacity > limit {
			capacity = limit
		}
	}
	v, err := d.store.CreateVolume(req.GetName(), capacity, src)
	if err != nil {
		return nil, storeErr(err)
	}
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId:           v.ID,
		CapacityBytes:      v.CapacityBytes,
		ContentSource:      req.GetVolumeContentSource(),
		AccessibleTopology: []*csi.Topology{d.topology()},
	}}, nil
}

func (d *Driver) DeleteVolume(_ context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID missing")
	}
	if err := d.store.DeleteVolume(req.GetVolumeId()); err != nil {
		return nil, storeErr(err)
	}
	return &csi.DeleteVolumeResponse{}, nil
}

func (d *Driver) ValidateVolumeCapabilities(_ context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID missing")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume capabilities missing")
	}
	if _, ok := d.store.GetVolume(req.GetVolumeId()); !ok {
		return nil, status.Errorf(codes.NotFound, "volume %q not found", req.GetVolumeId())
	}
	for _, c := range req.GetVolumeCapabilities() {
		if !supported(c) {
			return &csi.ValidateVolumeCapabilitiesResponse{Message: "only mount volumes with single-node access are supported"}, nil
		}
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
	}}, nil
}

func (d *Driver) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	caps := []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
		csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS,
		csi.ControllerServiceCapability_RPC_CLONE_VOLUME,
	}
	out := &csi.ControllerGetCapabilitiesResponse{}
	for _, c := range caps {
		out.Capabilities = append(out.Capabilities, &csi.ControllerServiceCapability{
			Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{Type: c}}})
	}
	return out, nil
}

func snapshotOf(sn Snapshot) *csi.Snapshot {
	return &csi.Snapshot{
		SnapshotId:     sn.ID,
		SourceVolumeId: sn.SourceVolumeID,
		SizeBytes:      sn.SizeBytes,
		CreationTime:   timestamppb.New(sn.CreatedAt),
		// The copy is complete when CreateSnapshot returns: cut and uploaded at once.
		ReadyToUse: true,
	}
}

func (d *Driver) CreateSnapshot(_ context.Context, req *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name missing")
	}
	if req.GetSourceVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "source volume ID missing")
	}
	sn, err := d.store.CreateSnapshot(req.GetName(), req.GetSourceVolumeId())
	if err != nil {
		return nil, storeErr(err)
	}
	return &csi.CreateSnapshotResponse{Snapshot: snapshotOf(sn)}, nil
}

func (d *Driver) DeleteSnapshot(_ context.Context, req *csi.DeleteSnapshotRequest) (*csi.DeleteSnapshotResponse, error) {
	if req.GetSnapshotId() == "" {
		return nil, status.Error(codes.InvalidArgument, "snapshot ID missing")
	}
	if err := d.store.DeleteSnapshot(req.GetSnapshotId()); err != nil {
		return nil, storeErr(err)
	}
	return &csi.DeleteSnapshotResponse{}, nil
}

// ListSnapshots pages with starting_token = the index of the first entry.
func (d *Driver) ListSnapshots(_ context.Context, req *csi.ListSnapshotsRequest) (*csi.ListSnapshotsResponse, error) {
	all := d.store.ListSnapshots(req.GetSnapshotId(), req.GetSourceVolumeId())
	start := 0
	if t := req.GetStartingToken(); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 || n > len(all) {
			return nil, status.Errorf(codes.Aborted, "invalid starting token %q", t)
		}
		start = n
	}
	end := len(all)
	if m := int(req.GetMaxEntries()); m > 0 && start+m < end {
		end = start + m
	}
	out := &csi.ListSnapshotsResponse{}
	for _, sn := range all[start:end] {
		out.Entries = append(out.Entries, &csi.ListSnapshotsResponse_Entry{Snapshot: snapshotOf(sn)})
	}
	if end < len(all) {
		out.NextToken = strconv.Itoa(end)
	}
	return out, nil
}

// ---------------------------------------------------------------- Node

func (d *Driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: d.nodeID, AccessibleTopology: d.topology()}, nil
}

func (d *Driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	// None: no staging (NodePublishVolume is called directly), no stats, no expansion.
	return &csi.NodeGetCapabilitiesResponse{}, nil
}

// NodePublishVolume bind-mounts the volume's directory on the target path
// (read-only when asked). Publishing an already published target succeeds.
func (d *Driver) NodePublishVolume(_ context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	target := req.GetTargetPath()
	switch {
	case req.GetVolumeId() == "":
		return nil, status.Error(codes.InvalidArgument, "volume ID missing")
	case target == "" || !filepath.IsAbs(target):
		return nil, status.Error(codes.InvalidArgument, "target path missing or not absolute")
	case req.GetVolumeCapability() == nil:
		return nil, status.Error(codes.InvalidArgument, "volume capability missing")
	case !supported(req.GetVolumeCapability()):
		return nil, status.Errorf(codes.InvalidArgument, "unsupported volume capability %v", req.GetVolumeCapability())
	}
	if _, ok := d.store.GetVolume(req.GetVolumeId()); !ok {
		return nil, status.Errorf(codes.NotFound, "volume %q not found", req.GetVolumeId())
	}
	source := d.store.VolumePath(req.GetVolumeId())
	if err := os.MkdirAll(target, 0o750); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	mounted, err := d.mounter.IsMountPoint(target)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if mounted {
		return &csi.NodePublishVolumeResponse{}, nil
	}
	readOnly := req.GetReadonly() ||
		req.GetVolumeCapability().GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY
	if err := d.mounter.BindMount(source, target, readOnly); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

// NodeUnpublishVolume unmounts the target and removes it; a target that is
// gone already, or not mounted, is fine.
func (d *Driver) NodeUnpublishVolume(_ context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	target := req.GetTargetPath()
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID missing")
	}
	if target == "" || !filepath.IsAbs(target) {
		return nil, status.Error(codes.InvalidArgument, "target path missing or not absolute")
	}
	for i := 0; i < 8; i++ { // a target mounted more than once
		mounted, err := d.mounter.IsMountPoint(target)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		if !mounted {
			break
		}
		if err := d.mounter.Unmount(target); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// methodName shortens "/csi.v1.Controller/CreateVolume" for the log.
func methodName(full string) string { return full[strings.LastIndex(full, "/")+1:] }
