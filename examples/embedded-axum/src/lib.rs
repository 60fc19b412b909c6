//! An axum application with Tessera inside. Tessera's routes are mounted under `/auth`; the
//! application's own routes are protected by Tessera's extractors:
//!
//! | route | who may call it |
//! |---|---|
//! | `GET /` | anyone; it greets a logged-in caller by name (`Option<AuthUser>`) |
//! | `GET /account` | a logged-in caller, any model (`AuthUser`) |
//! | `POST /notes` | an HTML form from a browser logged in with a cookie, with the login's CSRF token (`CsrfForm`) |
//! | `POST /cart` | a session caller, with `X-CSRF-Token`: the item is added to the session's data (`SessionData`) |
//! | `GET /admin` | a caller with the `admin` role (`RequireRole<Admin>`) |
//! | `GET`, `POST /api/notes` | a JSON API for `Authorization: Bearer` access tokens (`BearerAuth`) |

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tessera::Tessera;
use tessera_http::extract::{Admin, AuthUser, BearerAuth, CsrfForm, RequireRole, SessionData};
use tessera_http::json::ApiJson;
use tessera_http::{ApiError, AppState};

/// The application's state: its own data, and Tessera's state, which the extractors find
/// through [`FromRef`].
#[derive(Clone)]
pub struct AppContext {
    tessera: AppState,
    notes: Notes,
}

impl FromRef<AppContext> for AppState {
    fn from_ref(context: &AppContext) -> AppState {
        context.tessera.clone()
    }
}

/// Each user's notes, by user id (the application's own data; in memory for the example).
#[derive(Clone, Default)]
struct Notes(Arc<Mutex<HashMap<String, Vec<String>>>>);

impl Notes {
    fn of(&self, user: &str) -> Vec<String> {
        let notes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        notes.get(user).cloned().unwrap_or_default()
    }

    fn add(&self, user: &str, note: String) {
        let mut notes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        notes.entry(user.to_owned()).or_default().push(note);
    }
}

/// The whole application: its routes, and Tessera's under `tessera.mount()`.
pub fn app(tessera: &Tessera) -> Router {
    let context = AppContext {
        tessera: tessera.state(),
        notes: Notes::default(),
    };
    // The application's pages hold the login's CSRF token and the user's notes: not cached, not
    // framed by another site.
    let pages = Router::new()
        .route("/", get(home))
        .route("/account", get(account))
        .route("/notes", post(add_note))
        .route("/admin", get(admin))
        .layer(axum::middleware::map_response(page_headers));
    Router::new()
        .merge(pages)
        .route("/cart", post(add_to_cart))
        .route("/api/notes", get(api_notes).post(api_add_note))
        .merge(tessera.router())
        .fallback(|| async { ApiError::not_found("no page here") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "this route does not take that method",
            )
        })
        .with_state(context)
}

/// Headers for pages: never cached (they carry a CSRF token), never framed by another site.
async fn page_headers(mut response: Response) -> Response {
    use axum::http::{HeaderValue, header};
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

async fn home(user: Option<AuthUser>) -> Html<String> {
    let greeting = match user {
        Some(user) => format!("Hello, {}.", escape(user.user.username.as_str())),
        None => "Hello, stranger. Log in with POST /auth/v1/session/login.".to_owned(),
    };
    Html(format!(
        "<!doctype html><title>Home</title><p>{greeting}</p>"
    ))
}

/// A page for logged-in users, with a form protected by the login's CSRF token.
async fn account(State(context): State<AppContext>, user: AuthUser) -> Html<String> {
    let name = escape(user.user.username.as_str());
    let notes: String = context
        .notes
        .of(user.id().as_str())
        .iter()
        .map(|n| format!("<li>{}</li>", escape(n)))
        .collect();
    let form = match user.csrf_token(&context.tessera) {
        Some(csrf) => format!(
            "<form method=\"post\" action=\"/notes\">\
             <input type=\"hidden\" name=\"csrf_token\" value=\"{csrf}\">\
             <input name=\"text\"><button>Add a note</button></form>"
        ),
        None => String::new(),
    };
    Html(format!(
        "<!doctype html><title>Account</title><h1>{name}</h1>\
         <p>Logged in with the {} model.</p><ul id=\"notes\">{notes}</ul>{form}",
        user.model_name()
    ))
}

/// A note from the account page's form.
#[derive(Deserialize)]
struct NoteForm {
    text: String,
}

async fn add_note(
    State(context): State<AppContext>,
    CsrfForm { user, form }: CsrfForm<NoteForm>,
) -> Result<Redirect, ApiError> {
    let text = checked_text("note", form.text)?;
    context.notes.add(user.id().as_str(), text);
    Ok(Redirect::to("/account"))
}

/// An item for the cart, which lives in the session's data.
#[derive(Deserialize)]
struct CartItem {
    item: String,
}

async fn add_to_cart(
    data: SessionData,
    ApiJson(body): ApiJson<CartItem>,
) -> Result<Json<Value>, ApiError> {
    let item = checked_text("item", body.item)?;
    let updated = data
        .update(|data| {
            let cart = data.entry("cart").or_insert_with(|| json!([]));
            if !cart.is_array() {
                *cart = json!([]);
            }
            if let Some(items) = cart.as_array_mut() {
                items.push(Value::String(item.clone()));
            }
        })
        .await?;
    Ok(Json(updated))
}

async fn admin(RequireRole { user, .. }: RequireRole<Admin>) -> Html<String> {
    Html(format!(
        "<!doctype html><title>Admin</title><p>Welcome to the admin page, {}.</p>",
        escape(user.user.username.as_str())
    ))
}

async fn api_notes(State(context): State<AppContext>, bearer: BearerAuth) -> Json<Value> {
    let user = &bearer.claims.claims().sub;
    Json(json!({ "notes": context.notes.of(user.as_str()) }))
}

/// A note sent to the JSON API.
#[derive(Deserialize)]
struct ApiNote {
    text: String,
}

async fn api_add_note(
    State(context): State<AppContext>,
    bearer: BearerAuth,
    ApiJson(note): ApiJson<ApiNote>,
) -> Result<Response, ApiError> {
    let text = checked_text("note", note.text)?;
    let user = &bearer.claims.claims().sub;
    context.notes.add(user.as_str(), text);
    Ok((
        StatusCode::CREATED,
        Json(json!({ "notes": context.notes.of(user.as_str()) })),
    )
        .into_response())
}

/// A note or a cart item: 1 to 200 characters.
fn checked_text(what: &str, text: String) -> Result<String, ApiError> {
    let length = text.chars().count();
    if length == 0 || length > 200 {
        return Err(ApiError::bad_request(
            "invalid-text",
            format!("a {what} has 1 to 200 characters"),
        ));
    }
    Ok(text)
}

/// Text made safe to put in HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
