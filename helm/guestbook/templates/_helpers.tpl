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

{{/* The Redis host and port the backend writes to (standalone mode). */}}
{{- define "guestbook.redisHostPort" -}}
{{- if .Values.redis.enabled }}
{{- printf "%s:6379" (include "guestbook.componentName" (dict "root" . "component" "redis")) }}
{{- else }}
{{- printf "%s:%v" .Values.redis.external.host .Values.redis.external.port }}
{{- end }}
{{- end }}

{{/* "true" when the backend uses a Redis outside the chart: external standalone or cluster. */}}
{{- define "guestbook.redisExternal" -}}
{{- $r := .Values.redis }}
{{- if or (eq $r.mode "external-cluster") (and (eq $r.mode "standalone") (not $r.enabled)) }}true{{ end }}
{{- end }}

{{/* The sentinels' addresses, one per pod of their StatefulSet: the backend asks each in turn. */}}
{{- define "guestbook.sentinelAddresses" -}}
{{- $name := include "guestbook.componentName" (dict "root" . "component" "redis-sentinel") }}
{{- $addresses := list }}
{{- range $i := until (int .Values.redis.sentinel.count) }}
{{- $addresses = append $addresses (printf "%s-%d.%s:26379" $name $i $name) }}
{{- end }}
{{- join "," $addresses }}
{{- end }}

{{/* REDIS_PASSWORD (from the Secret) then REDIS_URL, which expands it: order matters. */}}
{{- define "guestbook.redisEnv" -}}
{{- $r := .Values.redis }}
{{- $ext := $r.external }}
{{- $auth := "" }}
{{- if and (include "guestbook.redisExternal" .) $ext.existingSecret }}
{{- $auth = printf "%s:$(REDIS_PASSWORD)@" $ext.username }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $ext.existingSecret }}
      key: {{ $ext.passwordKey }}
{{- end }}
{{- if eq $r.mode "sentinel" }}
{{- $redis := include "guestbook.componentName" (dict "root" . "component" "redis") }}
{{- /* Only the scheme counts: the sentinels name the host and port. */}}
- name: REDIS_URL
  value: {{ printf "redis://%s-0.%s:6379" $redis $redis | quote }}
- name: REDIS_SENTINELS
  value: {{ include "guestbook.sentinelAddresses" . | quote }}
- name: REDIS_MASTER_NAME
  value: {{ $r.sentinel.masterName | quote }}
- name: REDIS_MIN_REPLICAS_ACK
  value: {{ $r.sentinel.minReplicasAck | toString | quote }}
{{- else if eq $r.mode "external-cluster" }}
{{- /* REDIS_URL carries the credentials (and rediss:// would carry TLS); the nodes, the topology. */}}
- name: REDIS_URL
  value: {{ printf "redis://%s%s" $auth (first $r.cluster.nodes) | quote }}
- name: REDIS_CLUSTER_NODES
  value: {{ join "," $r.cluster.nodes | quote }}
{{- else if not $r.enabled }}
- name: REDIS_URL
  value: {{ printf "redis://%s%s/%v" $auth (include "guestbook.redisHostPort" .) $ext.database | quote }}
{{- else }}
- name: REDIS_URL
  value: {{ printf "redis://%s" (include "guestbook.redisHostPort" .) | quote }}
{{- end }}
{{- end }}

{{/* The TCP ports of the external Redis Cluster the backend may reach. */}}
{{- define "guestbook.clusterPorts" -}}
{{- $ports := .Values.redis.cluster.ports }}
{{- if not $ports }}
{{- range .Values.redis.cluster.nodes }}
{{- $ports = append $ports (int (last (splitList ":" .))) }}
{{- end }}
{{- end }}
{{- uniq $ports | toJson }}
{{- end }}

{{/* Refuse values that cannot work, with one clear line each. */}}
{{- define "guestbook.validateValues" -}}
{{- $r := .Values.redis }}
{{- $ext := $r.external }}
{{- if eq $r.mode "standalone" }}
{{- if and (not $r.enabled) (not $ext.host) }}
{{- fail "guestbook: no Redis: set redis.enabled=true (bundled) or redis.external.host" }}
{{- end }}
{{- if and $r.enabled $ext.host }}
{{- fail "guestbook: redis.enabled=true and redis.external.host are both set: pick one" }}
{{- end }}
{{- else if eq $r.mode "sentinel" }}
{{- if gt (int $r.sentinel.quorum) (int $r.sentinel.count) }}
{{- fail (printf "guestbook: redis.sentinel.quorum (%v) exceeds redis.sentinel.count (%v): no failover could ever start" $r.sentinel.quorum $r.sentinel.count) }}
{{- end }}
{{- if gt (int $r.sentinel.minReplicasAck) (int $r.sentinel.replicas) }}
{{- fail (printf "guestbook: redis.sentinel.minReplicasAck (%v) exceeds redis.sentinel.replicas (%v): every append would answer 503" $r.sentinel.minReplicasAck $r.sentinel.replicas) }}
{{- end }}
{{- if $ext.host }}
{{- fail "guestbook: redis.mode=sentinel bundles its Redis; unset redis.external.host" }}
{{- end }}
{{- else if eq $r.mode "external-cluster" }}
{{- if not $r.cluster.nodes }}
{{- fail "guestbook: redis.mode=external-cluster needs redis.cluster.nodes: the cluster's seed nodes as host:port" }}
{{- end }}
{{- if $ext.host }}
{{- fail "guestbook: redis.mode=external-cluster reaches the cluster through redis.cluster.nodes; unset redis.external.host" }}
{{- end }}
{{- range $name := list "REDIS_SENTINELS" "REDIS_REPLICA_URL" }}
{{- if hasKey $.Values.backend.env $name }}
{{- fail (printf "guestbook: backend.env.%s cannot be used with redis.mode=external-cluster (REDIS_CLUSTER_NODES)" $name) }}
{{- end }}
{{- end }}
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
