{{/* Names ------------------------------------------------------------------------------------ */}}

{{- define "avengers.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart>, or <release> when it already contains the chart name. */}}
{{- define "avengers.fullname" -}}
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

{{/* Name of one component's resources: (dict "root" $ "component" "embedder"). Kept short enough
     for the longest suffix KubeRay adds ("-serve-svc") to stay within 63 characters. */}}
{{- define "avengers.componentName" -}}
{{- printf "%s-%s" (include "avengers.fullname" .root | trunc 40 | trimSuffix "-") .component }}
{{- end }}

{{- define "avengers.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "avengers.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "avengers.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Labels ----------------------------------------------------------------------------------- */}}

{{/* Selector labels of one component: (dict "root" $ "component" "embedder"). */}}
{{- define "avengers.selectorLabels" -}}
app.kubernetes.io/name: {{ include "avengers.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of one component's resources: (dict "root" $ "component" "embedder"). */}}
{{- define "avengers.labels" -}}
helm.sh/chart: {{ include "avengers.chart" .root }}
{{ include "avengers.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: avengers
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Images --------------------------------------------------------------------------------- */}}

{{/* repository:tag of an image block, tag defaulting to the chart's appVersion: (dict "root" $ "image" .Values.image). */}}
{{- define "avengers.imageRef" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{/* imagePullSecrets of a pod spec, or nothing: (dict "root" $ "indent" 6). Use as {{- include ... }}. */}}
{{- define "avengers.imagePullSecrets" -}}
{{- with .root.Values.imagePullSecrets }}
{{- printf "imagePullSecrets:\n%s" (toYaml . | indent 2) | nindent $.indent }}
{{- end }}
{{- end }}

{{/* Addresses the services use to find each other ------------------------------------------- */}}

{{/* host:port of one of the four gRPC services: (dict "root" $ "component" "router"), or of another
     component with (dict ... "port" N). */}}
{{- define "avengers.serviceAddr" -}}
{{- $port := .port | default (index .root.Values .component).port }}
{{- printf "%s:%d" (include "avengers.componentName" .) (int $port) }}
{{- end }}

{{/* host:port of the model pool: the serve Service KubeRay creates for the RayService, the standalone
     pool's Service, or the external address. */}}
{{- define "avengers.modelPoolAddr" -}}
{{- if and .Values.modelPool.enabled (eq .Values.modelPool.runtime "standalone") }}
{{- include "avengers.serviceAddr" (dict "root" . "component" "model-pool" "port" .Values.modelPool.grpcPort) }}
{{- else if .Values.modelPool.enabled }}
{{- printf "%s-serve-svc:%d" (include "avengers.componentName" (dict "root" . "component" "model-pool")) (int .Values.modelPool.grpcPort) }}
{{- else }}
{{- required "modelPool.externalAddr is required when modelPool.enabled is false" .Values.modelPool.externalAddr }}
{{- end }}
{{- end }}

{{- define "avengers.qdrantUrl" -}}
{{- if .Values.qdrant.enabled }}
{{- printf "http://%s:%d" (include "avengers.componentName" (dict "root" . "component" "qdrant")) (int .Values.qdrant.httpPort) }}
{{- else }}
{{- required "qdrant.external.url is required when qdrant.enabled is false" .Values.qdrant.external.url }}
{{- end }}
{{- end }}

{{/* Redis host:port/db without scheme or credentials, for the in-chart Redis or external.url. */}}
{{- define "avengers.redisHostPart" -}}
{{- if .Values.redis.enabled }}
{{- printf "%s:%d/0" (include "avengers.componentName" (dict "root" . "component" "redis")) (int .Values.redis.port) }}
{{- else }}
{{- $url := required "redis.external.url or redis.external.urlSecret.name is required when redis.enabled is false" .Values.redis.external.url }}
{{- regexReplaceAll "^rediss?://" $url "" }}
{{- end }}
{{- end }}

{{- define "avengers.redisScheme" -}}
{{- if and (not .Values.redis.enabled) (hasPrefix "rediss://" .Values.redis.external.url) }}rediss{{ else }}redis{{ end }}
{{- end }}

{{/* Environment ------------------------------------------------------------------------------ */}}

{{/* QDRANT_URL and QDRANT_API_KEY (by reference). */}}
{{- define "avengers.qdrantEnv" -}}
- name: QDRANT_URL
  value: {{ include "avengers.qdrantUrl" . | quote }}
{{- if .Values.qdrant.auth.enabled }}
- name: QDRANT_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ required "qdrant.auth.existingSecret is required when qdrant.auth.enabled" .Values.qdrant.auth.existingSecret }}
      key: {{ .Values.qdrant.auth.existingSecretKey }}
{{- end }}
{{- end }}

{{/* REDIS_URL: from a Secret holding the whole URL, or built from the host and a password Secret
     (Kubernetes expands $(REDIS_PASSWORD) when the container starts; the manifest holds no password). */}}
{{- define "avengers.redisEnv" -}}
{{- if and (not .Values.redis.enabled) .Values.redis.external.urlSecret.name }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.external.urlSecret.name }}
      key: {{ .Values.redis.external.urlSecret.key }}
{{- else if .Values.redis.auth.enabled }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ required "redis.auth.existingSecret is required when redis.auth.enabled" .Values.redis.auth.existingSecret }}
      key: {{ .Values.redis.auth.existingSecretKey }}
- name: REDIS_URL
  value: {{ printf "%s://:$(REDIS_PASSWORD)@%s" (include "avengers.redisScheme" .) (include "avengers.redisHostPart" .) | quote }}
{{- else }}
- name: REDIS_URL
  value: {{ printf "%s://%s" (include "avengers.redisScheme" .) (include "avengers.redisHostPart" .) | quote }}
{{- end }}
{{- end }}

{{/* Environment every avengers container gets: addresses, stores, writable cache dirs, logging. */}}
{{- define "avengers.commonEnv" -}}
- name: AVENGERS_GATEWAY_ADDR
  value: {{ include "avengers.serviceAddr" (dict "root" . "component" "gateway") | quote }}
- name: AVENGERS_EMBEDDER_ADDR
  value: {{ include "avengers.serviceAddr" (dict "root" . "component" "embedder") | quote }}
- name: AVENGERS_ROUTER_ADDR
  value: {{ include "avengers.serviceAddr" (dict "root" . "component" "router") | quote }}
- name: AVENGERS_VOTER_ADDR
  value: {{ include "avengers.serviceAddr" (dict "root" . "component" "voter") | quote }}
- name: AVENGERS_MODEL_POOL_ADDR
  value: {{ include "avengers.modelPoolAddr" . | quote }}
{{ include "avengers.qdrantEnv" . }}
{{ include "avengers.redisEnv" . }}
- name: AVENGERS_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
# Port of the Prometheus /metrics endpoint of every service (0 turns it off).
- name: AVENGERS_METRICS_PORT
  value: {{ ternary .Values.metrics.port 0 .Values.metrics.enabled | quote }}
# The root filesystem is read-only: caches and temporary files go to the scratch volume.
- name: HOME
  value: /tmp
- name: AVENGERS_CACHE_DIR
  value: /tmp/avengers-cache
- name: HF_HOME
  value: /tmp/hf
- name: HF_HUB_OFFLINE
  value: "1"
- name: MPLCONFIGDIR
  value: /tmp/matplotlib
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Checksum of a rendered template, to roll pods when it changes: (dict "root" $ "template" "config.yaml"). */}}
{{- define "avengers.checksum" -}}
{{- include (print .root.Template.BasePath "/" .template) .root | sha256sum }}
{{- end }}
