package main

// The kubelet's plugin registration (what node-driver-registrar does, in
// process): a gRPC Registration service on a socket in the kubelet's
// plugins_registry directory. The kubelet's plugin watcher finds the socket,
// asks GetInfo for the driver's name and CSI endpoint, connects to that
// endpoint (NodeGetInfo: node ID and topology, written to the CSINode and the
// Node's labels), and reports the outcome with NotifyRegistrationStatus.

import (
	"context"
	"log"

	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

type registration struct {
	registerapi.UnimplementedRegistrationServer
	name string
	// endpoint: the CSI socket's path as the kubelet sees it (the host's path).
	endpoint string
	// failed is called when the kubelet reports that registration failed.
	failed func(reason string)
}

func (r *registration) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	log.Printf("registration: the kubelet asked for the plugin's info (endpoint %s)", r.endpoint)
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              r.name,
		Endpoint:          r.endpoint,
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

func (r *registration) NotifyRegistrationStatus(_ context.Context, st *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if st.PluginRegistered {
		log.Printf("registration: the kubelet registered %s", r.name)
	} else {
		log.Printf("registration: the kubelet failed to register %s: %s", r.name, st.Error)
		if r.failed != nil {
			r.failed(st.Error)
		}
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}
