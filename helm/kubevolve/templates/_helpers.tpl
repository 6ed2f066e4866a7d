{{/* Names and labels shared by every template. */}}
{{- define "kubevolve.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "kubevolve.labels" -}}
app.kubernetes.io/name: kubevolve
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kubevolve.selector" -}}
app.kubernetes.io/name: kubevolve
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kubevolve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "kubevolve.fullname" .) .Values.serviceAccount.name }}
{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}

{{- define "kubevolve.image" -}}
{{ .repository }}:{{ .tag }}
{{- end -}}

{{/* The store URL the operator and every step Job use. */}}
{{- define "kubevolve.storeUrl" -}}
{{- if eq .Values.store.mode "bundled" -}}
weaviate://{{ include "kubevolve.fullname" . }}-weaviate.{{ .Release.Namespace }}.svc:8080?grpc=50051
{{- else -}}{{ .Values.store.external.url }}{{- end -}}
{{- end -}}

{{- define "kubevolve.storeSecret" -}}
{{- if eq .Values.store.mode "bundled" -}}
{{- if .Values.weaviate.apiKey.enabled }}{{ .Values.weaviate.apiKey.existingSecret | default (printf "%s-store-admin" (include "kubevolve.fullname" .)) }}{{ end -}}
{{- else -}}{{ .Values.store.external.apiKeySecret.name }}{{- end -}}
{{- end -}}

{{/* Each lab has its own store key (the bundled Weaviate with its API key: RBAC per tenant). */}}
{{- define "kubevolve.labKeys" -}}
{{- if and (eq .Values.store.mode "bundled") .Values.weaviate.apiKey.enabled }}true{{ end -}}
{{- end -}}

{{/* The store API key as a container env entry, when the store has one (the operator's, and the run browser's). */}}
{{- define "kubevolve.storeKeyEnv" -}}
{{- with include "kubevolve.storeSecret" . -}}
- name: KUBEVOLVE_STORE_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ ternary "api-key" $.Values.store.external.apiKeySecret.key (eq $.Values.store.mode "bundled") }}
{{- end }}
{{- end -}}

{{/* The ports evaluation pods may reach the store on, comma-separated: networkPolicy.storePorts, else the
bundled Weaviate's, else the HTTP and gRPC ports of store.external.url, read as
kubevolve.runtime.kubernetes.netpol.store_ports reads it (tests check the two agree). */}}
{{- define "kubevolve.storePorts" -}}
{{- if .Values.networkPolicy.storePorts -}}
{{ join "," .Values.networkPolicy.storePorts }}
{{- else if eq .Values.store.mode "bundled" -}}
8080,50051
{{- else -}}
{{- $url := urlParse .Values.store.external.url -}}
{{- $http := get (dict "weaviate" "8080" "http" "80" "https" "443") (lower $url.scheme) -}}
{{- if regexMatch ":[0-9]+$" $url.host }}{{ $http = regexFind "[0-9]+$" $url.host }}{{ end -}}
{{- $grpc := "50051" -}}
{{- range splitList "&" $url.query }}
{{- $kv := splitn "=" 2 . -}}
{{- if and (eq $kv._0 "grpc") (regexMatch "(^|:)[0-9]+$" (default "" $kv._1)) }}{{ $grpc = regexFind "[0-9]+$" $kv._1 }}{{ end -}}
{{- end }}
{{- range splitList "&" $url.query }}
{{- $kv := splitn "=" 2 . -}}
{{- if eq $kv._0 "grpc_port" }}{{ $grpc = $kv._1 }}{{ end -}}
{{- end }}
{{- list (int $http) (int $grpc) | uniq | join "," -}}
{{- end -}}
{{- end -}}
