{{/* The release's name for the chart's objects (at most 63 characters, less a suffix). */}}
{{- define "fraudscale.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels every object of the chart carries. */}}
{{- define "fraudscale.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The pods of one component ("rest" or "stream"): what Services, PDBs and HPAs select. */}}
{{- define "fraudscale.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The image of a role: <repository>-<role>:<tag, default the chart's appVersion>. */}}
{{- define "fraudscale.image" -}}
{{- $image := .root.Values.image -}}
{{- printf "%s-%s:%s" $image.repository .role (default .root.Chart.AppVersion $image.tag) -}}
{{- end -}}

{{/* The shared settings' ConfigMap and Secret names. */}}
{{- define "fraudscale.configName" -}}{{ include "fraudscale.fullname" . }}-shared{{- end -}}
{{- define "fraudscale.secretName" -}}
{{- default (printf "%s-secrets" (include "fraudscale.fullname" .)) .Values.shared.existingSecret -}}
{{- end -}}

{{/*
A component's settings as environment variables: each key of `settings` (a field of the
settings class, snake_case) becomes <prefix><FIELD>. tests/deploy/test_chart.py holds these
names equal to the settings classes' fields.
*/}}
{{- define "fraudscale.settingsEnv" -}}
{{- range $field, $value := .settings }}
- name: {{ printf "%s%s" $.prefix (upper $field) }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* Pod and container security: non-root, read-only root filesystem, no capabilities. */}}
{{- define "fraudscale.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}
{{- define "fraudscale.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* The model store volume: a claim when set, else scratch space the MLflow mirror fills. */}}
{{- define "fraudscale.modelVolume" -}}
- name: models
  {{- if .Values.shared.modelStore.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ .Values.shared.modelStore.existingClaim }}
    readOnly: {{ not .Values.shared.mlflow.trackingUri }}
  {{- else }}
  emptyDir: {}
  {{- end }}
- name: tmp
  emptyDir: {}
{{- end -}}
