{{/*
The model-pool config (ModelPoolConfig) the chart runs, as a YAML document: app_name, the models as
given, server.port = grpcPort, http_port 8000 (KubeRay probes the Serve HTTP proxy there),
grpc_request_timeout_s, and modelPool.extraArgs for the rest (limits, ingress). The Ray Serve app gets it
as its args; the standalone server as its --config file.
*/}}
{{- define "avengers.modelPool.config" -}}
{{- $mp := .Values.modelPool }}
{{- $config := merge (dict "app_name" $mp.appName "models" $mp.models "server" (dict "port" (int $mp.grpcPort)) "http_port" 8000) (deepCopy $mp.extraArgs) }}
{{- if not (kindIs "invalid" $mp.grpcRequestTimeoutS) }}
{{- $_ := set $config "grpc_request_timeout_s" $mp.grpcRequestTimeoutS }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/*
The Ray Serve config (serveConfigV2) of the model pool, as a YAML document: one application running
modelPool.importPath (avengers.services.model_pool.app:build_app) with the model-pool config as its args,
and the gRPC proxy serving avengers.v1.ModelPool on modelPool.grpcPort.
*/}}
{{- define "avengers.modelPool.serveConfig" -}}
{{- $mp := .Values.modelPool }}
{{- $grpc := dict "port" (int $mp.grpcPort) "grpc_servicer_functions" (list "avengers.v1.model_pool_pb2_grpc.add_ModelPoolServicer_to_server") }}
{{- if not (kindIs "invalid" $mp.grpcRequestTimeoutS) }}
{{- $_ := set $grpc "request_timeout_s" $mp.grpcRequestTimeoutS }}
{{- end }}
{{- /* Per-model deployment options (replicas, autoscaling, resources) are applied by the app from its args. */}}
{{- $app := dict "name" $mp.appName "route_prefix" (printf "/%s" $mp.appName) "import_path" $mp.importPath "args" (include "avengers.modelPool.config" . | fromYaml) }}
{{- $serve := dict
      "proxy_location" "EveryNode"
      "http_options" (dict "host" "0.0.0.0" "port" 8000)
      "grpc_options" $grpc
      "logging_config" (dict "log_level" $mp.logLevel "encoding" "JSON")
      "applications" (list $app) }}
{{- toYaml $serve }}
{{- end }}

{{/*
Fail early when the GPU worker groups cannot hold the models' minimum replicas:
sum(min_replicas * num_gpus) must fit in sum(maxReplicas * nvidia.com/gpu) of the worker groups.
*/}}
{{- define "avengers.modelPool.checkGpuCapacity" -}}
{{- $need := 0.0 }}
{{- range .Values.modelPool.models }}
{{- $gpus := float64 (default 0 (dig "resources" "num_gpus" 0 .)) }}
{{- $min := float64 (default 1 (dig "autoscaling" "min_replicas" 1 .)) }}
{{- $need = addf $need (mulf $gpus $min) }}
{{- end }}
{{- $have := 0.0 }}
{{- range .Values.modelPool.workerGroups }}
{{- $perPod := float64 (default 0 (dig "resources" "limits" "nvidia.com/gpu" 0 .)) }}
{{- $have = addf $have (mulf $perPod (float64 .maxReplicas)) }}
{{- end }}
{{- if gt $need $have }}
{{- fail (printf "modelPool: the models need %v GPUs at their min_replicas but the worker groups offer at most %v (nvidia.com/gpu limits x maxReplicas)" $need $have) }}
{{- end }}
{{- end }}

{{/* Pod-level parts shared by the Ray head and workers: (dict "root" $ "group" <head or worker group values>). */}}
{{- define "avengers.modelPool.volumes" -}}
- name: shm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .root.Values.modelPool.shmSizeLimit }}
- name: tmp
  emptyDir: {}
- name: model-cache
  {{- if .root.Values.modelPool.modelCacheVolume }}
  {{- toYaml .root.Values.modelPool.modelCacheVolume | nindent 2 }}
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- with .root.Values.modelPool.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "avengers.modelPool.volumeMounts" -}}
- name: shm
  mountPath: /dev/shm
- name: tmp
  mountPath: /tmp
- name: model-cache
  mountPath: /models
{{- with .root.Values.modelPool.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "avengers.modelPool.env" -}}
- name: HF_HOME
  value: /models/huggingface
- name: AVENGERS_LOG_LEVEL
  value: {{ .Values.modelPool.logLevel | quote }}
{{- with .Values.modelPool.huggingFace.existingSecret }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.modelPool.huggingFace.existingSecretKey }}
{{- end }}
{{- with .Values.modelPool.env }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Scheduling of a head or worker group: (its values). */}}
{{/* Environment of the standalone pool server (no store or cache credentials: it needs none). */}}
{{- define "avengers.modelPool.standaloneEnv" -}}
- name: AVENGERS_LOG_LEVEL
  value: {{ .Values.modelPool.logLevel | quote }}
- name: AVENGERS_METRICS_PORT
  value: {{ ternary .Values.metrics.port 0 .Values.metrics.enabled | quote }}
- name: HOME
  value: /tmp
- name: HF_HOME
  value: /tmp/hf
{{- with .Values.modelPool.huggingFace.existingSecret }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.modelPool.huggingFace.existingSecretKey }}
{{- end }}
{{- with .Values.modelPool.env }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "avengers.modelPool.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
