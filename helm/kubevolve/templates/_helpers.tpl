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
