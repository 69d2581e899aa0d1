{{/* The chart name, truncated to the 63 characters a label allows. */}}
{{- define "guestbook.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* RELEASE-guestbook, or RELEASE when it already contains the chart name. */}}
{{- define "guestbook.fullname" -}}
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

{{- define "guestbook.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full labels for metadata. */}}
{{- define "guestbook.labels" -}}
helm.sh/chart: {{ include "guestbook.chart" . }}
{{ include "guestbook.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: guestbook
{{- end }}

{{/* The minimal, immutable set for selectors. */}}
{{- define "guestbook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "guestbook.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Per component: call with (dict "root" $ "component" "backend"). */}}
{{- define "guestbook.componentName" -}}
{{- printf "%s-%s" (include "guestbook.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "guestbook.componentLabels" -}}
{{ include "guestbook.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "guestbook.componentSelectorLabels" -}}
{{ include "guestbook.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "guestbook.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "guestbook.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image: call with (dict "root" $ "image" .Values.backend.image). */}}
{{- define "guestbook.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{/* The Redis host and port the backend writes to. */}}
{{- define "guestbook.redisHostPort" -}}
{{- if .Values.redis.enabled }}
{{- printf "%s:6379" (include "guestbook.componentName" (dict "root" . "component" "redis")) }}
{{- else }}
{{- printf "%s:%v" .Values.redis.external.host .Values.redis.external.port }}
{{- end }}
{{- end }}

{{/* REDIS_PASSWORD (from the Secret) then REDIS_URL, which expands it: order matters. */}}
{{- define "guestbook.redisEnv" -}}
{{- $ext := .Values.redis.external }}
{{- if and (not .Values.redis.enabled) $ext.existingSecret }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $ext.existingSecret }}
      key: {{ $ext.passwordKey }}
- name: REDIS_URL
  value: {{ printf "redis://%s:$(REDIS_PASSWORD)@%s/%v" $ext.username (include "guestbook.redisHostPort" .) $ext.database | quote }}
{{- else if not .Values.redis.enabled }}
- name: REDIS_URL
  value: {{ printf "redis://%s/%v" (include "guestbook.redisHostPort" .) $ext.database | quote }}
{{- else }}
- name: REDIS_URL
  value: {{ printf "redis://%s" (include "guestbook.redisHostPort" .) | quote }}
{{- end }}
{{- end }}

{{/* Refuse values that cannot work, with one clear line each. */}}
{{- define "guestbook.validateValues" -}}
{{- $ext := .Values.redis.external }}
{{- if and (not .Values.redis.enabled) (not $ext.host) }}
{{- fail "guestbook: no Redis: set redis.enabled=true (bundled) or redis.external.host" }}
{{- end }}
{{- if and .Values.redis.enabled $ext.host }}
{{- fail "guestbook: redis.enabled=true and redis.external.host are both set: pick one" }}
{{- end }}
{{- range $component := list "backend" "client" }}
{{- $v := index $.Values $component }}
{{- if and $v.autoscaling.enabled (gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) }}
{{- fail (printf "guestbook: %s.autoscaling.minReplicas (%v) exceeds maxReplicas (%v)" $component $v.autoscaling.minReplicas $v.autoscaling.maxReplicas) }}
{{- end }}
{{- if le (int $v.terminationGracePeriodSeconds) (add $v.shutdown.delaySeconds $v.shutdown.drainTimeoutSeconds | int) }}
{{- fail (printf "guestbook: %s.terminationGracePeriodSeconds (%v) must exceed shutdown.delaySeconds + drainTimeoutSeconds (%v): the kubelet would SIGKILL the drain" $component $v.terminationGracePeriodSeconds (add $v.shutdown.delaySeconds $v.shutdown.drainTimeoutSeconds)) }}
{{- end }}
{{- if and $v.pdb.enabled (not $v.autoscaling.enabled) (le (int $v.replicaCount) 1) }}
{{- fail (printf "guestbook: %s.pdb with a single replica blocks every node drain: raise replicaCount or disable the pdb" $component) }}
{{- end }}
{{- end }}
{{- if and .Values.backend.faultInjection.enabled .Values.client.ingress.enabled (not .Values.backend.faultInjection.adminTokenSecret) }}
{{- fail "guestbook: fault injection with an Ingress and no admin token: set backend.faultInjection.adminTokenSecret" }}
{{- end }}
{{- end }}

{{/* The probes of a component: call with its values. */}}
{{- define "guestbook.probes" -}}
{{- with .startup }}
{{- if .enabled }}
startupProbe:
  httpGet:
    path: {{ .path }}
    port: http
  periodSeconds: {{ .periodSeconds }}
  timeoutSeconds: {{ .timeoutSeconds }}
  failureThreshold: {{ .failureThreshold }}
{{- end }}
{{- end }}
livenessProbe:
  httpGet:
    path: {{ .liveness.path }}
    port: http
  initialDelaySeconds: {{ .liveness.initialDelaySeconds }}
  periodSeconds: {{ .liveness.periodSeconds }}
  timeoutSeconds: {{ .liveness.timeoutSeconds }}
  failureThreshold: {{ .liveness.failureThreshold }}
readinessProbe:
  httpGet:
    path: {{ .readiness.path }}
    port: http
  initialDelaySeconds: {{ .readiness.initialDelaySeconds }}
  periodSeconds: {{ .readiness.periodSeconds }}
  timeoutSeconds: {{ .readiness.timeoutSeconds }}
  failureThreshold: {{ .readiness.failureThreshold }}
  successThreshold: 1
{{- end }}

{{/* Deployment, shared by the backend and the client:
     (dict "root" $ "component" "backend" "port" 8080 "env" (list of EnvVar as YAML string)). */}}
{{- define "guestbook.deployment" -}}
{{- $root := .root }}
{{- $v := index $root.Values .component }}
{{- $ctx := dict "root" $root "component" .component }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "guestbook.componentName" $ctx }}
  labels:
    {{- include "guestbook.componentLabels" $ctx | nindent 4 }}
spec:
  {{- if not $v.autoscaling.enabled }}
  replicas: {{ $v.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  minReadySeconds: {{ $v.minReadySeconds }}
  progressDeadlineSeconds: 120
  strategy:
    {{- toYaml $v.strategy | nindent 4 }}
  selector:
    matchLabels:
      {{- include "guestbook.componentSelectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "guestbook.componentSelectorLabels" $ctx | nindent 8 }}
      annotations:
        # Rolls the pods when the settings change.
        checksum/config: {{ .env | sha256sum }}
        {{- if $root.Values.metrics.podAnnotations }}
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ .port | quote }}
        prometheus.io/path: /metrics
        {{- end }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "guestbook.serviceAccountName" $root }}
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      affinity:
        {{- if $v.affinity }}
        {{- toYaml $v.affinity | nindent 8 }}
        {{- else }}
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              podAffinityTerm:
                topologyKey: kubernetes.io/hostname
                labelSelector:
                  matchLabels:
                    {{- include "guestbook.componentSelectorLabels" $ctx | nindent 20 }}
        {{- end }}
      {{- with $v.topologySpreadConstraints }}
      topologySpreadConstraints:
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
      containers:
        - name: {{ .component }}
          image: {{ include "guestbook.image" (dict "root" $root "image" $v.image) }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          ports:
            - name: http
              containerPort: {{ .port }}
              protocol: TCP
          env:
            {{- .env | nindent 12 }}
            {{- with $v.extraEnvs }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- include "guestbook.probes" $v.probes | trim | nindent 10 }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
{{- end }}

{{/* Service, PDB, HPA of a component: (dict "root" $ "component" "backend"). */}}
{{- define "guestbook.service" -}}
{{- $v := index .root.Values .component }}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "guestbook.componentName" . }}
  labels:
    {{- include "guestbook.componentLabels" . | nindent 4 }}
spec:
  type: {{ $v.service.type }}
  selector:
    {{- include "guestbook.componentSelectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ $v.service.port }}
      targetPort: http
      protocol: TCP
{{- end }}

{{- define "guestbook.pdb" -}}
{{- $v := index .root.Values .component }}
{{- if $v.pdb.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "guestbook.componentName" . }}
  labels:
    {{- include "guestbook.componentLabels" . | nindent 4 }}
spec:
  maxUnavailable: {{ $v.pdb.maxUnavailable }}
  # An unready pod may still be evicted, so it cannot block a node drain forever.
  unhealthyPodEvictionPolicy: AlwaysAllow
  selector:
    matchLabels:
      {{- include "guestbook.componentSelectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}

{{- define "guestbook.hpa" -}}
{{- $v := index .root.Values .component }}
{{- if $v.autoscaling.enabled }}
# Seed 001's HPA: scale on the per-pod p99.9 (the window gauge through prometheus-adapter),
# the signal /readiness fails on at readinessP999Ms and shedding starts on at shedP999Ms.
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "guestbook.componentName" . }}
  labels:
    {{- include "guestbook.componentLabels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "guestbook.componentName" . }}
  minReplicas: {{ $v.autoscaling.minReplicas }}
  maxReplicas: {{ $v.autoscaling.maxReplicas }}
  metrics:
    - type: Pods
      pods:
        metric:
          name: {{ $v.autoscaling.metricName }}
        target:
          type: AverageValue
          averageValue: {{ $v.autoscaling.targetP999 }}
  {{- with $v.autoscaling.behavior }}
  behavior:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}
