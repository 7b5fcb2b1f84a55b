{{/*
The chart name, or nameOverride.
*/}}
{{- define "replicator-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's objects, at most 63 characters. fullnameOverride
wins; a release name that already contains the chart name is used as is; a
release name that is the chart name's leading dash-separated part (release
"replicator", chart "replicator-operator") gives the chart name; otherwise
"<release>-<chart>".
*/}}
{{- define "replicator-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "replicator-operator.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else if hasPrefix (printf "%s-" .Release.Name) $name }}
{{- $name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "replicator-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: stable across upgrades.
*/}}
{{- define "replicator-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "replicator-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Common labels on every object.
*/}}
{{- define "replicator-operator.labels" -}}
helm.sh/chart: {{ include "replicator-operator.chart" . }}
{{ include "replicator-operator.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: replicator
{{- end }}

{{/*
The ServiceAccount the operator runs as.
*/}}
{{- define "replicator-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "replicator-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Images: the tag defaults to the chart's appVersion.
*/}}
{{- define "replicator-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "replicator-operator.agentImage" -}}
{{- printf "%s:%s" .Values.agentImage.repository (default .Chart.AppVersion .Values.agentImage.tag) }}
{{- end }}

{{/*
The Lease that elects the leader (in the release namespace).
*/}}
{{- define "replicator-operator.leaderElectionId" -}}
{{- include "replicator-operator.fullname" . }}
{{- end }}

{{/*
The namespace of the default ReplicatorRepository.
*/}}
{{- define "replicator-operator.defaultRepositoryNamespace" -}}
{{- .Values.defaultRepository.namespace | default .Values.watchNamespace | default .Release.Namespace }}
{{- end }}

{{/*
Checks that span several values (the schema checks each one).
*/}}
{{- define "replicator-operator.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled=true: without it every replica would reconcile" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "metrics.serviceMonitor.enabled=true needs metrics.enabled=true (the ServiceMonitor scrapes the metrics Service)" }}
{{- end }}
{{- if .Values.defaultRepository.create }}
{{- $s3 := .Values.defaultRepository.s3.bucket }}
{{- $fs := .Values.defaultRepository.filesystem.claimName }}
{{- if and $s3 $fs }}
{{- fail "defaultRepository: set exactly one of s3.bucket or filesystem.claimName, not both" }}
{{- end }}
{{- if not (or $s3 $fs) }}
{{- fail "defaultRepository.create=true needs s3.bucket or filesystem.claimName" }}
{{- end }}
{{- if and .Values.defaultRepository.namespace .Values.watchNamespace (ne .Values.defaultRepository.namespace .Values.watchNamespace) }}
{{- fail "defaultRepository.namespace must equal watchNamespace: the operator only sees that namespace" }}
{{- end }}
{{- end }}
{{- end }}
