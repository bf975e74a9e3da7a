{{/* vim: set filetype=mustache: */}}

{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "coupon-issuer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. Truncated to 50 characters so that "<fullname>-<component>-<suffix>"
still fits the 63-character limit of names and label values.
*/}}
{{- define "coupon-issuer.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of one component's resources: (dict "ctx" $ "component" "api"). */}}
{{- define "coupon-issuer.componentName" -}}
{{- printf "%s-%s" (include "coupon-issuer.fullname" .ctx) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "coupon-issuer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "coupon-issuer.labels" -}}
helm.sh/chart: {{ include "coupon-issuer.chart" . }}
{{ include "coupon-issuer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: coupon-issuer
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "coupon-issuer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "coupon-issuer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component: (dict "ctx" $ "component" "api"). */}}
{{- define "coupon-issuer.componentLabels" -}}
{{ include "coupon-issuer.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "coupon-issuer.componentSelectorLabels" -}}
{{ include "coupon-issuer.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* ServiceAccount of the api, consumer, lag-exporter pods. */}}
{{- define "coupon-issuer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "coupon-issuer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Secret holding the URLs and the admin token. */}}
{{- define "coupon-issuer.secretName" -}}
{{- default (include "coupon-issuer.fullname" .) .Values.existingSecret.name }}
{{- end }}

{{/*
Image reference of one process: (dict "ctx" $ "override" .Values.api.image).
Empty override fields fall back to .Values.image; the tag defaults to the appVersion.
*/}}
{{- define "coupon-issuer.image" -}}
{{- $img := .ctx.Values.image }}
{{- $repo := default $img.repository .override.repository }}
{{- $tag := default (default .ctx.Chart.AppVersion $img.tag) .override.tag }}
{{- if eq (toString $tag) "latest" }}
{{- fail "image tag \"latest\" is not allowed: pin a version (image.tag or <process>.image.tag)" }}
{{- end }}
{{- if and $img.digest (not .override.repository) (not .override.tag) }}
{{- printf "%s@%s" $repo $img.digest }}
{{- else }}
{{- printf "%s:%s" $repo (toString $tag) }}
{{- end }}
{{- end }}

{{/*
The most consumers any mode may run. Fails rendering when the values ask for more consumers than the
topic has partitions: extra consumers in a group get no partition and sit idle.
*/}}
{{- define "coupon-issuer.consumerMaxReplicas" -}}
{{- $partitions := int .Values.kafka.partitions }}
{{- $mode := .Values.autoscaling.mode }}
{{- if eq $mode "none" }}
{{- $replicas := int .Values.consumer.replicas }}
{{- if gt $replicas $partitions }}
{{- fail (printf "consumer.replicas (%d) exceeds kafka.partitions (%d): a consumer group cannot use more consumers than partitions; lower consumer.replicas or raise kafka.partitions" $replicas $partitions) }}
{{- end }}
{{- $replicas }}
{{- else }}
{{- $max := int .Values.autoscaling.maxReplicas }}
{{- if eq $max 0 }}{{- $max = $partitions }}{{- end }}
{{- if gt $max $partitions }}
{{- fail (printf "autoscaling.maxReplicas (%d) exceeds kafka.partitions (%d): a consumer group cannot use more consumers than partitions; lower autoscaling.maxReplicas or raise kafka.partitions" $max $partitions) }}
{{- end }}
{{- $min := int .Values.autoscaling.minReplicas }}
{{- if gt $min $max }}
{{- fail (printf "autoscaling.minReplicas (%d) exceeds the maximum consumer replicas (%d)" $min $max) }}
{{- end }}
{{- $max }}
{{- end }}
{{- end }}

{{/* Non-secret COUPON_* settings as a dict (ConfigMap data; inlined into the hook Job). */}}
{{- define "coupon-issuer.configData" -}}
COUPON_KAFKA_BOOTSTRAP: {{ .Values.kafka.bootstrap | quote }}
COUPON_TOPIC: {{ .Values.kafka.topic | quote }}
COUPON_DLQ_TOPIC: {{ .Values.kafka.dlqTopic | quote }}
COUPON_PARTITIONS: {{ .Values.kafka.partitions | toString | quote }}
COUPON_REPLICATION_FACTOR: {{ .Values.kafka.replicationFactor | toString | quote }}
COUPON_MIN_INSYNC_REPLICAS: {{ .Values.kafka.minInsyncReplicas | toString | quote }}
COUPON_DELIVERY_TIMEOUT_MS: {{ .Values.kafka.deliveryTimeoutMs | toString | quote }}
COUPON_CONSUMER_GROUP: {{ .Values.kafka.consumerGroup | quote }}
COUPON_DB_SCHEMA: {{ .Values.database.schema | quote }}
COUPON_DB_STATEMENT_CACHE_SIZE: {{ .Values.database.statementCacheSize | toString | quote }}
COUPON_REDIS_PREFIX: {{ .Values.redis.prefix | quote }}
COUPON_REDIS_CLUSTER: {{ .Values.redis.cluster | toString | quote }}
COUPON_API_HOST: "0.0.0.0"
COUPON_API_PORT: {{ .Values.api.port | toString | quote }}
COUPON_API_WORKERS: {{ .Values.api.workers | toString | quote }}
COUPON_MAX_BODY_BYTES: {{ .Values.api.maxBodyBytes | toString | quote }}
COUPON_API_HEAD_TIMEOUT_S: {{ .Values.api.headTimeoutSeconds | toString | quote }}
COUPON_API_BODY_TIMEOUT_S: {{ .Values.api.bodyTimeoutSeconds | toString | quote }}
COUPON_API_MAX_CONNECTIONS: {{ .Values.api.maxConnections | toString | quote }}
COUPON_CONSUMER_METRICS_PORT: {{ .Values.consumer.metricsPort | toString | quote }}
COUPON_LAG_EXPORTER_PORT: {{ .Values.lagExporter.port | toString | quote }}
COUPON_BATCH_MAX: {{ .Values.config.batchMax | toString | quote }}
COUPON_MAX_ATTEMPTS: {{ .Values.config.maxAttempts | toString | quote }}
COUPON_RETRY_BACKOFF_MS: {{ .Values.config.retryBackoffMs | toString | quote }}
COUPON_DB_POOL_SIZE: {{ .Values.config.dbPoolSize | toString | quote }}
COUPON_LOG_FORMAT: {{ .Values.config.logFormat | quote }}
COUPON_LOG_LEVEL: {{ .Values.config.logLevel | quote }}
COUPON_RATE_LIMIT_PER_USER: {{ .Values.config.rateLimitPerUser | toString | quote }}
COUPON_RATE_LIMIT_PER_IP: {{ .Values.config.rateLimitPerIp | toString | quote }}
{{- end }}

{{/*
The chart never deploys the admin endpoints open: without existingSecret.name, auth.adminToken must
be set, or rendering fails. With existingSecret.name the Secret must hold the admin token key
(the secretKeyRef is not optional, so a pod without it does not start).
*/}}
{{- define "coupon-issuer.adminToken" -}}
{{- if and (not .Values.existingSecret.name) (not .Values.auth.adminToken) }}
{{- fail "auth.adminToken is empty: the admin endpoints (POST /api/coupons) would be open. Set auth.adminToken (e.g. --set auth.adminToken=$(openssl rand -hex 32)) or reference a Secret you manage that holds it: existingSecret.name (key existingSecret.keys.adminToken)" }}
{{- end }}
{{- .Values.auth.adminToken }}
{{- end }}

{{/* Secret env vars: (dict "ctx" $ "secretName" "..."). */}}
{{- define "coupon-issuer.secretEnv" -}}
{{- $keys := .ctx.Values.existingSecret.keys }}
- name: COUPON_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ $keys.databaseUrl }}
- name: COUPON_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ $keys.redisUrl }}
- name: COUPON_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ $keys.adminToken }}
- name: COUPON_USER_JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ $keys.userJwtSecret }}
      optional: true
{{- end }}

{{/* Environment of a long-running container: ConfigMap + Secret + extraEnv. */}}
{{- define "coupon-issuer.env" -}}
envFrom:
  - configMapRef:
      name: {{ include "coupon-issuer.fullname" . }}
env:
  {{- include "coupon-issuer.secretEnv" (dict "ctx" . "secretName" (include "coupon-issuer.secretName" .)) | nindent 2 }}
  {{- with .Values.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* Checksums that roll the pods when configuration changes. */}}
{{- define "coupon-issuer.checksums" -}}
checksum/config: {{ include "coupon-issuer.configData" . | sha256sum }}
{{- if not .Values.existingSecret.name }}
checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by every pod: (dict "ctx" $ "component" "api"). */}}
{{- define "coupon-issuer.podCommon" -}}
{{- $v := .ctx.Values }}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
securityContext:
  {{- toYaml $v.podSecurityContext | nindent 2 }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $v.topologySpread.enabled }}
topologySpreadConstraints:
  - maxSkew: {{ $v.topologySpread.maxSkew }}
    topologyKey: {{ $v.topologySpread.topologyKey }}
    whenUnsatisfiable: {{ $v.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "coupon-issuer.componentSelectorLabels" . | nindent 8 }}
    matchLabelKeys:
      - pod-template-hash
{{- end }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: {{ $v.tmpVolume.sizeLimit }}
{{- end }}

{{/* Pod metadata (labels + annotations) of a component: (dict "ctx" $ "component" "api"). */}}
{{- define "coupon-issuer.podMetadata" -}}
labels:
  {{- include "coupon-issuer.componentLabels" . | nindent 2 }}
  {{- with .ctx.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  {{- include "coupon-issuer.checksums" .ctx | nindent 2 }}
  {{- with .ctx.Values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* Container-level settings shared by every container. */}}
{{- define "coupon-issuer.containerCommon" -}}
imagePullPolicy: {{ .Values.image.pullPolicy }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end }}
