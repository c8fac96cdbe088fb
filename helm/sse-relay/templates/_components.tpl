{{/* The two services, for templates that render the same object for each:
     a list of (dict "root" $ "component" NAME "values" VALUES "port" PORT). */}}
{{- define "sse-relay.components" -}}
{{- $list := list }}
{{- if .Values.relay.enabled }}
{{- $list = append $list (dict "component" "relay" "key" "relay" "port" 8080) }}
{{- end }}
{{- if .Values.forecastApi.enabled }}
{{- $list = append $list (dict "component" "forecast-api" "key" "forecastApi" "port" 8081) }}
{{- end }}
{{- toJson $list }}
{{- end }}
