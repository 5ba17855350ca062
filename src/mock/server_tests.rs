//! The mock over real HTTP: routing (prefixes, fallbacks), ordering of checks, and the catalog's
//! answers end to end. The pure rules are tested next to their code.

use serde_json::{Value, json};

use super::{Behaviour, MockConfig, MockHandle, start};

struct Mock {
    handle: MockHandle,
    http: reqwest::Client,
}

impl Mock {
    async fn new() -> Self {
        let handle = match start(MockConfig::default()).await {
            Ok(handle) => handle,
            Err(e) => panic!("mock did not start: {e}"),
        };
        Self { handle, http: reqwest::Client::new() }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.handle.addr())
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => panic!("request failed: {e}"),
        };
        let status = response.status().as_u16();
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) => panic!("no body: {e}"),
        };
        match serde_json::from_str(&text) {
            Ok(value) => (status, value),
            Err(e) => panic!("{status}: not JSON ({e}): {text}"),
        }
    }

    async fn openai(&self, key: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, self.url(&format!("/openai{path}"))).bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    async fn anthropic(&self, key: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, self.url(&format!("/anthropic{path}")))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01");
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    async fn google(&self, key: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = self.url(&format!("/google{path}"));
        let request = match body {
            Some(body) => self.http.post(url).json(&body),
            None => self.http.get(url),
        };
        self.send(request.header("x-goog-api-key", key)).await
    }

    async fn azure(&self, key: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, self.url(&format!("/azure{path}"))).header("api-key", key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

const GET: reqwest::Method = reqwest::Method::GET;
const POST: reqwest::Method = reqwest::Method::POST;

#[tokio::test]
async fn unknown_routes_answer_each_providers_404() {
    let m = Mock::new().await;
    let (status, body) = m.openai("sk-good", GET, "/v1/xyz", None).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"error": {"message": "Invalid URL (GET /v1/xyz)", "type": "invalid_request_error", "param": null, "code": null}})
    );
    let (status, body) = m.openai("sk-good", GET, "/v1/chat/completions", None).await;
    assert_eq!((status, body["error"]["message"].as_str()), (404, Some("Invalid URL (GET /v1/chat/completions)")));
    // Authentication comes first.
    let (status, body) = m.openai("sk-invalid-key-0000", GET, "/v1/xyz", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_api_key")));

    let (status, body) = m.anthropic("sk-ant-good", GET, "/v1/xyz", None).await;
    assert_eq!(status, 404);
    assert_eq!(
        (body["type"].as_str(), &body["error"]),
        (Some("error"), &json!({"type": "not_found_error", "message": "Not Found"}))
    );

    let (status, body) = m.google("AIza-good", "/v1beta/xyz", None).await;
    assert_eq!((status, body), (404, json!({"error": {"code": 404, "message": "Not Found", "status": "NOT_FOUND"}})));

    // No data-plane deployment lookup.
    let lookup = "/openai/deployments/gpt-4o?api-version=2024-10-21";
    let (status, body) = m.azure("az-good", GET, lookup, None).await;
    assert_eq!((status, body), (404, json!({"error": {"code": "404", "message": "Resource not found"}})));
    let (status, _) = m.azure("az-invalid", GET, lookup, None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn openai_lists_the_catalog_and_rejects_by_model() {
    let m = Mock::new().await;
    let (status, list) = m.openai("sk-good", GET, "/v1/models", None).await;
    assert_eq!(status, 200);
    let Some(data) = list["data"].as_array() else { panic!("no data: {list}") };
    let model = |id: &str| data.iter().find(|m| m["id"] == id);
    assert_eq!(model("gpt-4o").map(|m| &m["shutdown_date"]), Some(&json!("2027-01-14")));
    assert_eq!(model("gpt-4.1").map(|m| m.get("shutdown_date")), Some(None));
    assert!(model("gpt-4.5-preview").is_none());
    let (status, body) = m.openai("sk-good", GET, "/v1/models/gpt-4.5-preview", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("model_not_found")));

    let chat = |model: &str, extra: Value| {
        let mut body = json!({"model": model, "messages": user("mock-score=0.9")});
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
        m.openai("sk-good", POST, "/v1/chat/completions", Some(body))
    };
    let (status, body) = chat("gpt-4.5-preview", json!({"messages": []})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("model_not_found")), "model before body");
    let (status, body) = chat("gpt-4.1", json!({"reasoning_effort": "low"})).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": {"message": "Unsupported parameter: 'reasoning_effort' is not supported with this model.",
                         "type": "invalid_request_error", "param": "reasoning_effort", "code": "unsupported_parameter"}})
    );
    let (status, body) = chat("gpt-5-mini", json!({"temperature": 0.2})).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("temperature")));
    let (status, body) = chat("gpt-5.1", json!({"max_completion_tokens": 50})).await;
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["message"]["content"], "");
    assert_eq!(body["usage"]["completion_tokens_details"]["reasoning_tokens"], 50);
}

#[tokio::test]
async fn openai_keys_without_model_read_can_still_chat() {
    let m = Mock::new().await;
    let key = "sk-nomodelread-0000";
    for path in ["/v1/models", "/v1/models/gpt-4.1"] {
        let (status, body) = m.openai(key, GET, path, None).await;
        assert_eq!(status, 401, "{path}");
        assert_eq!(body["error"]["code"], Value::Null);
        let Some(message) = body["error"]["message"].as_str() else { panic!("{body}") };
        assert!(message.contains("Missing scopes: api.model.read."), "{message}");
    }
    let chat = json!({"model": "gpt-4.1", "messages": user("x")});
    let (status, _) = m.openai(key, POST, "/v1/chat/completions", Some(chat.clone())).await;
    assert_eq!(status, 200);
    // Other providers treat the key as a working one.
    let (status, _) = m
        .azure(key, POST, "/openai/v1/chat/completions", Some(json!({"model": "gpt-4-1", "messages": user("x")})))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn anthropic_lifecycles_temperature_and_credit() {
    let m = Mock::new().await;
    let (status, list) = m.anthropic("sk-ant-good", GET, "/v1/models", None).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list["data"].as_array().into_iter().flatten().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids, ["claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-8", "claude-sonnet-5", "claude-opus-4-1"]);
    let (status, model) = m.anthropic("sk-ant-good", GET, "/v1/models/claude-opus-4-1", None).await;
    assert_eq!((status, model["lifecycle"].as_str()), (200, Some("deprecated")));
    let (status, body) = m.anthropic("sk-ant-good", GET, "/v1/models/claude-sonnet-4-5", None).await;
    assert_eq!((status, body["error"]["message"].as_str()), (404, Some("model: claude-sonnet-4-5")));

    let messages = |key: &'static str, model: &'static str, temperature: Option<f64>| {
        let mut body = json!({"model": model, "max_tokens": 512, "messages": user("x")});
        if let Some(t) = temperature {
            body["temperature"] = json!(t);
        }
        m.anthropic(key, POST, "/v1/messages", Some(body))
    };
    let (status, body) = messages("sk-ant-good", "claude-opus-4-8", Some(0.0)).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        json!({"type": "invalid_request_error", "message": "`temperature` is deprecated for this model."})
    );
    assert_eq!(messages("sk-ant-good", "claude-sonnet-4-6", Some(0.0)).await.0, 200);
    assert_eq!(messages("sk-ant-good", "claude-sonnet-5", None).await.0, 200);

    let (status, body) = messages("sk-ant-quota", "claude-sonnet-4-6", None).await;
    assert_eq!((status, body["error"]["type"].as_str()), (400, Some("invalid_request_error")));
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.starts_with("Your credit balance is too low")));
    let (status, body) = messages("sk-ant-spendlimit", "claude-sonnet-4-6", None).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["message"],
        "You have reached your specified API usage limits. You will regain access on 2027-01-01 at 00:00 UTC."
    );
    // Over-limit keys still list models.
    assert_eq!(m.anthropic("sk-ant-spendlimit", GET, "/v1/models", None).await.0, 200);
    // Injected at runtime too.
    m.handle.set_behaviour("sk-ant-later", Behaviour::SpendLimit, Some(1));
    assert_eq!(messages("sk-ant-later", "claude-sonnet-4-6", None).await.0, 400);
    assert_eq!(messages("sk-ant-later", "claude-sonnet-4-6", None).await.0, 200);
}

#[tokio::test]
async fn gemini_v1_and_v1beta_differ() {
    let m = Mock::new().await;
    let judge = json!({
        "systemInstruction": {"parts": [{"text": "Judge. mock-score=0.7"}]},
        "contents": [{"role": "user", "parts": [{"text": "the answer"}]}],
        "generationConfig": {"temperature": 0, "maxOutputTokens": 2048, "responseMimeType": "application/json"}
    });
    let path = |v: &str, model: &str| format!("/{v}/models/{model}:generateContent");
    let (status, body) = m.google("AIza-good", &path("v1", "gemini-3.5-flash"), Some(judge.clone())).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(
        body["error"]["message"],
        "Invalid JSON payload received. Unknown name \"systemInstruction\": Cannot find field."
    );
    assert_eq!(body["error"]["details"][0]["@type"], "type.googleapis.com/google.rpc.BadRequest");

    let (status, body) = m.google("AIza-good", &path("v1beta", "gemini-3.5-flash"), Some(judge.clone())).await;
    assert_eq!(status, 200);
    assert_eq!(body["candidates"][0]["finishReason"], "STOP");
    assert_eq!(body["usageMetadata"]["thoughtsTokenCount"], 1024);

    let mut small = judge.clone();
    small["generationConfig"]["maxOutputTokens"] = json!(100);
    let (status, body) = m.google("AIza-good", &path("v1beta", "gemini-3.5-flash"), Some(small)).await;
    assert_eq!((status, body["candidates"][0]["finishReason"].as_str()), (200, Some("MAX_TOKENS")));
    assert_eq!(body["candidates"][0]["content"].get("parts"), None);

    let (status, body) = m.google("AIza-good", &path("v1beta", "gemini-2.5-pro"), Some(judge.clone())).await;
    assert_eq!(status, 404);
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("models/gemini-2.5-pro is not found for API version v1beta"))
    );
    for version in ["v1", "v1beta"] {
        let (status, list) = m.google("AIza-good", &format!("/{version}/models"), None).await;
        assert_eq!(status, 200);
        assert_eq!(list["models"][0]["name"], "models/gemini-3.5-flash");
    }
}

#[tokio::test]
async fn azure_checks_the_deployment_before_the_body() {
    let m = Mock::new().await;
    let dated = |d: &str| format!("/openai/deployments/{d}/chat/completions?api-version=2024-10-21");
    let empty = json!({"messages": []});
    let (status, body) = m.azure("az-good", POST, &dated("nope"), Some(empty.clone())).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("DeploymentNotFound")));
    let (status, body) = m.azure("az-good", POST, &dated("gpt-4o"), Some(empty)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("empty_array")));
    let (status, _) = m.azure("az-good", POST, &dated("nope"), None).await;
    assert_eq!(status, 404, "even without a body");

    // "judge" is a gpt-5.1: its rules, its id.
    let judge = json!({"messages": user("x"), "temperature": 0});
    let (status, body) = m.azure("az-good", POST, &dated("judge"), Some(judge)).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("temperature")));
    let (status, body) = m.azure("az-good", POST, &dated("judge"), Some(json!({"messages": user("x")}))).await;
    assert_eq!((status, body["model"].as_str()), (200, Some("gpt-5.1")));
    assert_eq!(body["usage"]["completion_tokens_details"]["reasoning_tokens"], 512);
    let v1 = json!({"model": "gpt-4-1", "messages": user("x"), "temperature": 0});
    let (status, body) = m.azure("az-good", POST, "/openai/v1/chat/completions", Some(v1)).await;
    assert_eq!((status, body["model"].as_str()), (200, Some("gpt-4.1")));
    let v1 = json!({"model": "gpt-4.1", "messages": user("x")});
    let (status, body) = m.azure("az-good", POST, "/openai/v1/chat/completions", Some(v1)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("DeploymentNotFound")));

    let (status, list) = m.azure("az-good", GET, "/openai/models?api-version=2024-10-21", None).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list["data"].as_array().into_iter().flatten().filter_map(|m| m["id"].as_str()).collect();
    assert!(ids.contains(&"gpt-4.1") && ids.contains(&"gpt-5.1") && !ids.contains(&"judge"), "{ids:?}");
}
