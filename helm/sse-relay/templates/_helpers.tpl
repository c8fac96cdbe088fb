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
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- with .values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}
