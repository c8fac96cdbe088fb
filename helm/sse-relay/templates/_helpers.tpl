{{/* Names, labels and the pieces both services share. */}}

{{- define "sse-relay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sse-relay.fullname" -}}
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

{{/* Name of one component's objects: <fullname>-relay, <fullname>-forecast-api, <fullname>-redis. */}}
{{- define "sse-relay.componentName" -}}
{{- printf "%s-%s" (include "sse-relay.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sse-relay.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels; call with (dict "root" $ "component" "relay"). */}}
{{- define "sse-relay.labels" -}}
helm.sh/chart: {{ include "sse-relay.chart" .root }}
{{ include "sse-relay.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: sse-relay
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "sse-relay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sse-relay.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "sse-relay.image" -}}
{{- $image := .Values.image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{- define "sse-relay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sse-relay.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the JWT secret and the admin key. */}}
{{- define "sse-relay.secretName" -}}
{{- default (include "sse-relay.componentName" (dict "root" . "component" "secrets")) .Values.secrets.existingSecret }}
{{- end }}

{{/* SQLite or PostgreSQL, from the URL unless stated. */}}
{{- define "sse-relay.databaseEngine" -}}
{{- $db := .Values.forecastApi.database }}
{{- if $db.engine }}
{{- $db.engine }}
{{- else if $db.existingSecret.name }}
{{- fail "forecastApi.database.engine must be set (sqlite or postgres) when the URL comes from forecastApi.database.existingSecret" }}
{{- else if hasPrefix "sqlite:" $db.url }}
{{- "sqlite" }}
{{- else if or (hasPrefix "postgres://" $db.url) (hasPrefix "postgresql://" $db.url) }}
{{- "postgres" }}
{{- else }}
{{- fail (printf "forecastApi.database.url must start with sqlite: or postgres://, not %q" $db.url) }}
{{- end }}
{{- end }}

{{/* An env var from a Secret key: (dict "name" "X" "secret" "s" "key" "k"). */}}
{{- define "sse-relay.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .key }}
{{- end }}

{{- define "sse-relay.redisUrlEnv" -}}
{{- $root := .root }}
{{- if $root.Values.redis.bundled.enabled }}
- name: {{ .name }}
  value: {{ printf "redis://%s:6379" (include "sse-relay.componentName" (dict "root" $root "component" "redis")) | quote }}
{{- else if $root.Values.redis.existingSecret.name }}
{{ include "sse-relay.secretEnv" (dict "name" .name "secret" $root.Values.redis.existingSecret.name "key" $root.Values.redis.existingSecret.key) }}
{{- else }}
- name: {{ .name }}
  value: {{ $root.Values.redis.url | quote }}
{{- end }}
{{- end }}

{{/*
How one service reaches Redis beyond its URL: credentials, TLS, Sentinel.
(dict "root" $ "prefix" "SSE_RELAY" "credentials" .Values.redis.credentials.relay) → env entries;
files come from the volumes of "sse-relay.redisVolumes", mounted by "sse-relay.redisVolumeMounts".
*/}}
{{- define "sse-relay.redisEnv" -}}
{{- $redis := .root.Values.redis }}
{{- $prefix := printf "%s__REDIS__" .prefix }}
{{ include "sse-relay.redisUrlEnv" (dict "root" .root "name" (printf "%sURL" $prefix)) }}
{{- with .credentials.username }}
- name: {{ $prefix }}USERNAME
  value: {{ . | quote }}
{{- end }}
{{- if .credentials.passwordSecret.name }}
- name: {{ $prefix }}PASSWORD_FILE
  value: /etc/redis/credentials/password
{{- end }}
{{- if $redis.tls.secretName }}
{{- if $redis.tls.caKey }}
- name: {{ $prefix }}TLS__CA_FILE
  value: {{ printf "/etc/redis/tls/%s" $redis.tls.caKey | quote }}
{{- end }}
{{- if $redis.tls.certKey }}
- name: {{ $prefix }}TLS__CERT_FILE
  value: {{ printf "/etc/redis/tls/%s" $redis.tls.certKey | quote }}
- name: {{ $prefix }}TLS__KEY_FILE
  value: {{ printf "/etc/redis/tls/%s" $redis.tls.keyKey | quote }}
{{- end }}
{{- end }}
{{- if $redis.tls.insecureSkipVerify }}
- name: {{ $prefix }}TLS__INSECURE_SKIP_VERIFY
  value: "true"
{{- end }}
{{- with $redis.sentinel }}
{{- if .masterName }}
- name: {{ $prefix }}SENTINEL__MASTER_NAME
  value: {{ .masterName | quote }}
- name: {{ $prefix }}SENTINEL__ADDRESSES
  value: {{ join "," .addresses | quote }}
{{- with .username }}
- name: {{ $prefix }}SENTINEL__USERNAME
  value: {{ . | quote }}
{{- end }}
{{- if .passwordSecret.name }}
- name: {{ $prefix }}SENTINEL__PASSWORD_FILE
  value: /etc/redis/sentinel-credentials/password
{{- end }}
{{- if .tls }}
- name: {{ $prefix }}SENTINEL__TLS
  value: "true"
{{- end }}
{{- end }}
{{- end }}
{{- with $redis.cluster }}
{{- if .nodes }}
- name: {{ $prefix }}CLUSTER__NODES
  value: {{ join "," .nodes | quote }}
{{- if .tls }}
- name: {{ $prefix }}CLUSTER__TLS
  value: "true"
{{- end }}
- name: {{ $prefix }}LOG_PARTITIONS
  value: {{ $redis.logPartitions | quote }}
{{- end }}
{{- end }}
{{- if $redis.restricted }}
- name: {{ $prefix }}RESTRICTED
  value: "true"
{{- end }}
{{- end }}

{{/* The Secret files of "sse-relay.redisEnv": (dict "root" $ "credentials" …). */}}
{{- define "sse-relay.redisVolumes" -}}
{{- $redis := .root.Values.redis }}
{{- with .credentials.passwordSecret }}
{{- if .name }}
- name: redis-credentials
  secret:
    secretName: {{ .name }}
    items:
      - key: {{ .key }}
        path: password
{{- end }}
{{- end }}
{{- if $redis.tls.secretName }}
- name: redis-tls
  secret:
    secretName: {{ $redis.tls.secretName }}
{{- end }}
{{- with $redis.sentinel.passwordSecret }}
{{- if and $redis.sentinel.masterName .name }}
- name: redis-sentinel-credentials
  secret:
    secretName: {{ .name }}
    items:
      - key: {{ .key }}
        path: password
{{- end }}
{{- end }}
{{- end }}

{{- define "sse-relay.redisVolumeMounts" -}}
{{- $redis := .root.Values.redis }}
{{- if .credentials.passwordSecret.name }}
- name: redis-credentials
  mountPath: /etc/redis/credentials
  readOnly: true
{{- end }}
{{- if $redis.tls.secretName }}
- name: redis-tls
  mountPath: /etc/redis/tls
  readOnly: true
{{- end }}
{{- if and $redis.sentinel.masterName $redis.sentinel.passwordSecret.name }}
- name: redis-sentinel-credentials
  mountPath: /etc/redis/sentinel-credentials
  readOnly: true
{{- end }}
{{- end }}

{{/* Where browsers reach the relay. */}}
{{- define "sse-relay.relayPublicUrl" -}}
{{- if .Values.forecastApi.relayPublicUrl }}
{{- .Values.forecastApi.relayPublicUrl }}
{{- else if .Values.ingress.enabled }}
{{- printf "%s://%s" (ternary "https" "http" .Values.ingress.tls.enabled) .Values.ingress.host }}
{{- else if and .Values.httpRoute.enabled .Values.httpRoute.hostnames }}
{{- printf "https://%s" (first .Values.httpRoute.hostnames) }}
{{- else }}
{{- printf "http://%s" (include "sse-relay.componentName" (dict "root" . "component" "relay")) }}
{{- end }}
{{- end }}

{{/* Pod-level pieces shared by both services: (dict "root" $ "component" "relay" "values" .Values.relay). */}}
{{- define "sse-relay.podCommon" -}}
{{- $root := .root }}
serviceAccountName: {{ include "sse-relay.serviceAccountName" $root }}
automountServiceAccountToken: false
terminationGracePeriodSeconds: {{ .values.terminationGracePeriodSeconds }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .values.topologySpread.enabled }}
topologySpreadConstraints:
  # Across zones when the nodes say which, and across nodes always.
  - maxSkew: {{ .values.topologySpread.maxSkew }}
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "sse-relay.selectorLabels" . | nindent 8 }}
    matchLabelKeys: [pod-template-hash]
  - maxSkew: {{ .values.topologySpread.maxSkew }}
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "sse-relay.selectorLabels" . | nindent 8 }}
    matchLabelKeys: [pod-template-hash]
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Container-level pieces shared by both services. */}}
{{- define "sse-relay.containerCommon" -}}
image: {{ include "sse-relay.image" .root }}
imagePullPolicy: {{ .root.Values.image.pullPolicy }}
securityContext:
  {{- toYaml .root.Values.securityContext | nindent 2 }}
ports:
  - name: http
    containerPort: {{ .port }}
    protocol: TCP
  {{- if .metricsPort }}
  - name: metrics
    containerPort: {{ .metricsPort }}
    protocol: TCP
  {{- end }}
livenessProbe:
  httpGet: { path: /healthz, port: http }
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
readinessProbe:
  httpGet: { path: /readyz, port: http }
  periodSeconds: 2
  timeoutSeconds: 2
  failureThreshold: 2
startupProbe:
  httpGet: { path: /healthz, port: http }
  periodSeconds: 1
  failureThreshold: 30
lifecycle:
  # Endpoints and ingress backends are updated asynchronously: keep serving a moment first.
  preStop:
    sleep:
      seconds: {{ .values.preStopSleepSeconds }}
resources:
  {{- toYaml .values.resources | nindent 2 }}
{{- end }}

{{- define "sse-relay.podAnnotations" -}}
{{- if .root.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .metricsPort | default .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- with .values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}
