{{/*
One avengers gRPC server: its ConfigMap, Deployment, Service, HorizontalPodAutoscaler and
PodDisruptionBudget. Called as
  {{ include "avengers.grpcService" (dict "root" $ "component" "embedder" "grpcService" "avengers.v1.Embedder") }}
The container runs `avengers serve <component> --port <port> --config /etc/avengers/<component>.yaml`.
Optional keys, for servers that are not one of the four services (the standalone model pool):
  "values" (default .Values.<component>), "config" (the config dict; default values.config),
  "image" (default .Values.image), "command" (default: the image's entrypoint), "env" (a template
  name; default "avengers.commonEnv"), "podSecurityContext" and "containerSecurityContext",
  "workloadAnnotations" (annotations of the Deployment, e.g. checkov skips with their reason),
  "protocol" ("grpc" by default; "http" for the OpenAI-compatible HTTP API: port named http, probes
  GET /health (startup, liveness) and GET /ready (readiness: the gateway answers)).
*/}}
{{/* The check of a startup or liveness probe: (dict "port" 50051 "mode" "grpc"|"tcp"). */}}
{{- define "avengers.livenessCheck" -}}
{{- if eq .mode "tcp" }}
tcpSocket:
  port: {{ .port }}
{{- else if eq .mode "http" }}
httpGet:
  path: /health
  port: {{ .port }}
  scheme: {{ .scheme | default "HTTP" }}
{{- else }}
grpc:
  port: {{ .port }}
  service: ""
{{- end }}
{{- end }}

{{- define "avengers.grpcService" -}}
{{- $root := .root }}
{{- $component := .component }}
{{- $v := .values | default (index $root.Values $component) }}
{{- $name := include "avengers.componentName" . }}
{{- $image := .image | default $root.Values.image }}
{{- $config := deepCopy (.config | default $v.config) }}
{{- if eq $component "gateway" }}
{{- /* The gateway calls the model pool with the Serve application name the pool runs under (unless set). */}}
{{- $config = merge $config (dict "downstream" (dict "model_pool_application" $root.Values.modelPool.appName)) }}
{{- end }}
{{- if eq $component "http" }}
{{- /* Direct calls to one pool model go to the model pool, under the Serve application name it runs as. */}}
{{- $config = merge $config (dict "model_pool" (dict "address" (include "avengers.modelPoolAddr" $root) "application" $root.Values.modelPool.appName)) }}
{{- end }}
{{- $protocol := .protocol | default "grpc" }}
{{- $scheme := ternary "HTTPS" "HTTP" (and (eq $protocol "http") (hasKey ($config.server | default dict) "tls_cert_file")) }}
{{- $configYaml := $config | toYaml }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "avengers.labels" . | nindent 4 }}
data:
  {{ $component }}.yaml: |
    {{- $configYaml | nindent 4 }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "avengers.labels" . | nindent 4 }}
  {{- with .workloadAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- if not $v.autoscaling.enabled }}
  replicas: {{ $v.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 0
  selector:
    matchLabels:
      {{- include "avengers.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "avengers.labels" . | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ $configYaml | sha256sum }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "avengers.serviceAccountName" $root }}
      automountServiceAccountToken: {{ $root.Values.serviceAccount.automountServiceAccountToken }}
      {{- include "avengers.imagePullSecrets" (dict "root" $root "indent" 6) }}
      securityContext:
        {{- toYaml (.podSecurityContext | default $root.Values.podSecurityContext) | nindent 8 }}
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      containers:
        - name: {{ $component }}
          image: {{ include "avengers.imageRef" (dict "root" $root "image" $image) | quote }}
          imagePullPolicy: {{ $image.pullPolicy }}
          {{- with .command }}
          command:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          args:
            - serve
            - {{ $component }}
            - --port
            - {{ $v.port | quote }}
            - --config
            - /etc/avengers/{{ $component }}.yaml
          ports:
            - name: {{ $protocol }}
              containerPort: {{ $v.port }}
              protocol: TCP
            {{- if $root.Values.metrics.enabled }}
            - name: metrics
              containerPort: {{ $root.Values.metrics.port }}
              protocol: TCP
            {{- end }}
          env:
            {{- include (.env | default "avengers.commonEnv") $root | nindent 12 }}
            {{- with $v.env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          # Readiness asks grpc.health.v1 for this service by name, so a server that is up but not ready
          # takes no traffic. Startup and liveness ask for the server ("") or, with probes.liveness=tcp,
          # only check that the port accepts connections.
          startupProbe:
            {{- include "avengers.livenessCheck" (dict "port" $v.port "mode" $v.probes.liveness "scheme" $scheme) | nindent 12 }}
            periodSeconds: 5
            failureThreshold: {{ $v.probes.startupFailureThreshold }}
          livenessProbe:
            {{- include "avengers.livenessCheck" (dict "port" $v.port "mode" $v.probes.liveness "scheme" $scheme) | nindent 12 }}
            periodSeconds: {{ $v.probes.periodSeconds }}
            timeoutSeconds: 5
            failureThreshold: 3
          readinessProbe:
            {{- if eq $protocol "http" }}
            httpGet:
              path: /ready
              port: {{ $v.port }}
              scheme: {{ $scheme }}
            {{- else }}
            grpc:
              port: {{ $v.port }}
              service: {{ .grpcService }}
            {{- end }}
            periodSeconds: {{ $v.probes.periodSeconds }}
            timeoutSeconds: 5
            failureThreshold: 2
          {{- if gt (int $v.preStopSleepSeconds) 0 }}
          lifecycle:
            # Let endpoints drop this pod before the server starts its graceful stop.
            preStop:
              sleep:
                seconds: {{ $v.preStopSleepSeconds }}
          {{- end }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml (.containerSecurityContext | default $root.Values.containerSecurityContext) | nindent 12 }}
          volumeMounts:
            - name: config
              mountPath: /etc/avengers
              readOnly: true
            - name: scratch
              mountPath: /tmp
            {{- with $v.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: config
          configMap:
            name: {{ $name }}
        - name: scratch
          emptyDir:
            sizeLimit: {{ $root.Values.scratchSizeLimit }}
        {{- with $v.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "avengers.labels" . | nindent 4 }}
  {{- with $v.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $v.service.type }}
  selector:
    {{- include "avengers.selectorLabels" . | nindent 4 }}
  ports:
    - name: {{ $protocol }}
      port: {{ $v.port }}
      targetPort: {{ $protocol }}
      protocol: TCP
      appProtocol: {{ ternary "https" $protocol (eq $scheme "HTTPS") }}
    {{- if $root.Values.metrics.enabled }}
    - name: metrics
      port: {{ $root.Values.metrics.port }}
      targetPort: metrics
      protocol: TCP
    {{- end }}
{{- if $v.autoscaling.enabled }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "avengers.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $name }}
  minReplicas: {{ $v.autoscaling.minReplicas }}
  maxReplicas: {{ $v.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $v.autoscaling.targetCPUUtilizationPercentage }}
    {{- with $v.autoscaling.targetMemoryUtilizationPercentage }}
    - type: Resource
      resource:
        name: memory
        target:
          type: Utilization
          averageUtilization: {{ . }}
    {{- end }}
{{- end }}
{{- if $v.podDisruptionBudget.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "avengers.labels" . | nindent 4 }}
spec:
  {{- if hasKey $v.podDisruptionBudget "minAvailable" }}
  minAvailable: {{ $v.podDisruptionBudget.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $v.podDisruptionBudget.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "avengers.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}
