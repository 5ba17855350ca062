{{/* Name of the chart, or nameOverride. */}}
{{- define "byok-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: fullnameOverride, or the release name (with the chart name unless it holds it). */}}
{{- define "byok-operator.fullname" -}}
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

{{- define "byok-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "byok-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "byok-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "byok-operator.labels" -}}
helm.sh/chart: {{ include "byok-operator.chart" . }}
{{ include "byok-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: byok-operator
{{- end }}

{{- define "byok-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "byok-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image, by digest when one is given. */}}
{{- define "byok-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "byok-operator.judgeImage" -}}
{{- default (include "byok-operator.image" .) .Values.judge.image }}
{{- end }}

{{- define "byok-operator.keyringSecret" -}}
{{- default .Values.keyring.secretName .Values.keyring.existingSecret }}
{{- end }}

{{- define "byok-operator.caSecret" -}}
{{- default .Values.broker.ca.secretName .Values.broker.ca.existingSecret }}
{{- end }}

{{/* --default-models value: openai=...,anthropic=...,google=... */}}
{{- define "byok-operator.defaultModels" -}}
{{- $p := .Values.providers -}}
{{- printf "openai=%s,anthropic=%s,google=%s" $p.openai.defaultModel $p.anthropic.defaultModel $p.google.defaultModel }}
{{- end }}

{{/* Namespaces that get the judge NetworkPolicy. */}}
{{- define "byok-operator.judgeNamespaces" -}}
{{- $ns := .Values.networkPolicy.judge.namespaces -}}
{{- if and (not $ns) .Values.watchNamespace -}}
{{- $ns = list .Values.watchNamespace -}}
{{- end -}}
{{- toJson (default (list) $ns) -}}
{{- end }}
