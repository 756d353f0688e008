{{/* The chart's name. */}}
{{- define "crbridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: names the objects, the ServiceAccount and the RBAC. */}}
{{- define "crbridge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels selecting this release's pods. */}}
{{- define "crbridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "crbridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "crbridge.labels" -}}
{{ include "crbridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "crbridge.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Where the pod mounts things. */}}
{{- define "crbridge.statePath" -}}/var/lib/crbridge{{- end }}
{{- define "crbridge.configPath" -}}/etc/crbridge/crbridge.yaml{{- end }}
{{- define "crbridge.adminTokenDir" -}}/etc/crbridge/admin{{- end }}
{{- define "crbridge.secretsDir" -}}/etc/crbridge/secrets{{- end }}

{{/*
The crbridge config as the pod reads it: .Values.config plus what the chart decides
(state.path, http.listen, admin.tokenFile, the Lease's namespace and name). YAML.
*/}}
{{- define "crbridge.config" -}}
{{- $c := deepCopy .Values.config }}
{{- $state := default dict $c.state }}
{{- $_ := set $state "path" (include "crbridge.statePath" .) }}
{{- $_ := set $c "state" $state }}
{{- $http := default dict $c.http }}
{{- $_ := set $http "listen" (printf "0.0.0.0:%d" (int .Values.service.port)) }}
{{- $_ := set $c "http" $http }}
{{- if .Values.adminToken.existingSecret }}
{{- $admin := default dict $c.admin }}
{{- $_ := set $admin "tokenFile" (printf "%s/%s" (include "crbridge.adminTokenDir" .) .Values.adminToken.key) }}
{{- $_ := set $c "admin" $admin }}
{{- end }}
{{- $le := default dict $c.leaderElection }}
{{- if $le.enabled }}
{{- if not $le.namespace }}{{ $_ := set $le "namespace" .Release.Namespace }}{{ end }}
{{- if not $le.leaseName }}{{ $_ := set $le "leaseName" (include "crbridge.fullname" .) }}{{ end }}
{{- $_ := set $c "leaderElection" $le }}
{{- else if and (gt (int .Values.replicas) 1) }}
{{- fail "replicas > 1 needs config.leaderElection.enabled: true (else every replica publishes every change)" }}
{{- end }}
{{- toYaml $c }}
{{- end }}

{{/*
The plural the API server gives a kind when its CRD does not say otherwise (what crbridge's
discovery falls back to): lowercase, then -es after s, x, z, ch, sh; consonant + y → -ies;
else -s.
*/}}
{{- define "crbridge.plural" -}}
{{- $w := lower . }}
{{- if eq $w "*" }}
{{- /* A whole-group watch: every resource of the group. */ -}}
*
{{- else if or (hasSuffix "s" $w) (hasSuffix "x" $w) (hasSuffix "z" $w) (hasSuffix "ch" $w) (hasSuffix "sh" $w) }}
{{- printf "%ses" $w }}
{{- else if and (hasSuffix "y" $w) (gt (len $w) 1) (not (has (substr (sub (len $w) 2 | int) (sub (len $w) 1 | int) $w) (list "a" "e" "i" "o" "u"))) }}
{{- printf "%sies" (trimSuffix "y" $w) }}
{{- else }}
{{- printf "%ss" $w }}
{{- end }}
{{- end }}

{{/*
What the ServiceAccount may read, by the same rules as `crbridge rbac`: kinds watched in
all namespaces go to one ClusterRole; kinds watched in listed namespaces to a Role per
namespace (minus what the ClusterRole grants). One rule per API group. YAML:
{cluster: {group: [plural...]}, namespaces: {ns: {group: [plural...]}}}.
*/}}
{{- define "crbridge.grants" -}}
{{- $config := include "crbridge.config" . | fromYaml }}
{{- $cluster := dict }}
{{- $perNs := dict }}
{{- range $config.watches }}
{{- if not .namespaces }}
{{- $group := default "" .group }}
{{- $plural := default (include "crbridge.plural" .kind) .plural }}
{{- $_ := set $cluster $group (append (default list (get $cluster $group)) $plural | uniq | sortAlpha) }}
{{- end }}
{{- end }}
{{- range $config.watches }}
{{- if .namespaces }}
{{- $group := default "" .group }}
{{- $plural := default (include "crbridge.plural" .kind) .plural }}
{{- if not (has $plural (default list (get $cluster $group))) }}
{{- range .namespaces }}
{{- $grants := default dict (get $perNs .) }}
{{- $_ := set $grants $group (append (default list (get $grants $group)) $plural | uniq | sortAlpha) }}
{{- $_ := set $perNs . $grants }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml (dict "cluster" $cluster "namespaces" $perNs) }}
{{- end }}

{{/* get/list/watch rules, one per group, from a {group: [plural...]} dict. */}}
{{- define "crbridge.watchRules" -}}
{{- range $group, $plurals := . }}
- apiGroups: [{{ $group | quote }}]
  resources: {{ toJson $plurals }}
  verbs: ["get", "list", "watch"]
{{- end }}
{{- end }}
