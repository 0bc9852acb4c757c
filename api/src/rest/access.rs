//! Principals, roles and tokens: who the caller is (`/v1/me`), roles on an environment or the
//! system for users and directory groups (Teletraan's `user_roles` and `group_roles`), script
//! tokens of an environment (`token_roles`), and tokens of any principal.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use schema::rules::access::{Grant, GrantScope, Target};
use schema::time::{EpochMs, now_ms};
use schema::{AccessRole, EnvName, GroupName};
use serde::{Deserialize, Serialize};
use store::{GrantRow, NewToken, PrincipalRow, Subject, TokenInfo, TokenKind};

use super::ApiState;
use crate::auth::Principal;
use crate::created::Created;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};

/// How long a script token lives when its creator says nothing (Teletraan: 180 days).
const SCRIPT_TOKEN_DAYS: i64 = 180;
const DAY_MS: i64 = 86_400_000;

/// A principal's or group's name: letters, digits and `._@-` (and spaces for groups), at
/// most 128 characters.
fn subject_name(field: &'static str, s: &str, spaces: bool) -> ApiResult<String> {
    let s = s.trim();
    let ok = |c: char| c.is_ascii_alphanumeric() || "._@-".contains(c) || (spaces && c == ' ');
    if s.is_empty() || s.len() > 128 || !s.chars().all(ok) {
        return Err(ApiError::bad_request(format!(
            "{field}: 1 to 128 letters, digits and '._@-'{}",
            if spaces { " or spaces" } else { "" }
        )));
    }
    Ok(s.to_string())
}

fn role(field: &'static str, s: Option<&str>) -> ApiResult<AccessRole> {
    let s = s.ok_or_else(|| ApiError::bad_request(format!("{field} is required")))?;
    AccessRole::parse_lenient(s).map_err(|_| {
        ApiError::bad_request(format!("{field}: {s:?} is not a role (READER, PUBLISHER, OPERATOR or ADMIN)"))
    })
}

/// Who the caller is and what it holds.
#[derive(Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Me {
    name: String,
    roles: Vec<MyRole>,
}

#[derive(Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
struct MyRole {
    resource: String,
    #[serde(rename = "type")]
    resource_type: &'static str,
    role: AccessRole,
}

/// `GET /v1/me`.
pub(super) async fn me(Extension(p): Extension<Principal>) -> Json<Me> {
    let roles = p
        .grants
        .iter()
        .map(|Grant { scope, role }| MyRole {
            resource: scope.as_str().to_string(),
            resource_type: match scope {
                GrantScope::System => "SYSTEM",
                GrantScope::Env(_) => "ENV",
            },
            role: *role,
        })
        .collect();
    Json(Me { name: p.name, roles })
}

/// A role as users send it (Teletraan's UserRolesBean / GroupRolesBean: `name`, `role`;
/// `resource` and `type` come from the path).
#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct RoleInput {
    name: Option<String>,
    role: Option<String>,
    /// Token roles: epoch ms when the token stops working.
    #[serde(default, deserialize_with = "schema::model::lenient::opt_i64")]
    expire_date: Option<EpochMs>,
}

async fn list(s: &ApiState, subject: Subject, scope: GrantScope) -> ApiResult<Json<Vec<GrantRow>>> {
    Ok(Json(s.store.grants_on(subject, &scope).await?))
}

async fn create(
    s: &ApiState,
    p: &Principal,
    subject: Subject,
    scope: GrantScope,
    input: RoleInput,
) -> ApiResult<Created<GrantRow>> {
    let name = subject_name("name", input.name.as_deref().unwrap_or_default(), subject == Subject::Group)?;
    let role = role("role", input.role.as_deref())?;
    let row = s.store.set_grant(subject, &name, &scope, role, &p.name, now_ms()).await?;
    tracing::info!(principal = %p.name, subject = %name, scope = scope.as_str(), role = %role, "role granted");
    Ok(Created::new(row))
}

async fn put(
    s: &ApiState,
    p: &Principal,
    subject: Subject,
    name: &str,
    scope: GrantScope,
    input: RoleInput,
) -> ApiResult<Json<GrantRow>> {
    let name = subject_name("name", name, subject == Subject::Group)?;
    s.store.grant(subject, &name, &scope).await?;
    let role = role("role", input.role.as_deref())?;
    Ok(Json(s.store.set_grant(subject, &name, &scope, role, &p.name, now_ms()).await?))
}

fn env_scope(env: String) -> ApiResult<GrantScope> {
    Ok(GrantScope::Env(EnvName::parse(env)?))
}

macro_rules! role_routes {
    ($subject:expr, $list:ident, $create:ident, $get:ident, $put:ident, $delete:ident,
     $sys_list:ident, $sys_create:ident, $sys_get:ident, $sys_put:ident, $sys_delete:ident) => {
        /// `GET /v1/envs/{env}/…_roles`.
        pub(super) async fn $list(
            State(s): State<ApiState>,
            ApiPath(env): ApiPath<String>,
        ) -> ApiResult<Json<Vec<GrantRow>>> {
            list(&s, $subject, env_scope(env)?).await
        }

        /// `POST /v1/envs/{env}/…_roles` with `{"name", "role"}`.
        pub(super) async fn $create(
            State(s): State<ApiState>,
            Extension(p): Extension<Principal>,
            ApiPath(env): ApiPath<String>,
            ApiJson(input): ApiJson<RoleInput>,
        ) -> ApiResult<Created<GrantRow>> {
            create(&s, &p, $subject, env_scope(env)?, input).await
        }

        /// `GET /v1/envs/{env}/…_roles/{name}`.
        pub(super) async fn $get(
            State(s): State<ApiState>,
            ApiPath((env, name)): ApiPath<(String, String)>,
        ) -> ApiResult<Json<GrantRow>> {
            Ok(Json(s.store.grant($subject, &name, &env_scope(env)?).await?))
        }

        /// `PUT /v1/envs/{env}/…_roles/{name}` with `{"role"}`.
        pub(super) async fn $put(
            State(s): State<ApiState>,
            Extension(p): Extension<Principal>,
            ApiPath((env, name)): ApiPath<(String, String)>,
            ApiJson(input): ApiJson<RoleInput>,
        ) -> ApiResult<Json<GrantRow>> {
            put(&s, &p, $subject, &name, env_scope(env)?, input).await
        }

        /// `DELETE /v1/envs/{env}/…_roles/{name}`.
        pub(super) async fn $delete(
            State(s): State<ApiState>,
            Extension(p): Extension<Principal>,
            ApiPath((env, name)): ApiPath<(String, String)>,
        ) -> ApiResult<StatusCode> {
            s.store.delete_grant($subject, &name, &env_scope(env)?, &p.name, now_ms()).await?;
            Ok(StatusCode::NO_CONTENT)
        }

        /// `GET /v1/system/…_roles`.
        pub(super) async fn $sys_list(State(s): State<ApiState>) -> ApiResult<Json<Vec<GrantRow>>> {
            list(&s, $subject, GrantScope::System).await
        }

        /// `POST /v1/system/…_roles` with `{"name", "role"}`.
        pub(super) async fn $sys_create(
            State(s): State<ApiState>,
            Extension(p): Extension<Principal>,
            ApiJson(input): ApiJson<RoleInput>,
        ) -> ApiResult<Created<GrantRow>> {
            create(&s, &p, $subject, GrantScope::System, input).await
        }

        /// `GET /v1/system/…_roles/{name}`.
        pub(super) async fn $sys_get(
            State(s): State<ApiState>,
            ApiPath(name): ApiPath<String>,
        ) -> ApiResult<Json<GrantRow>> {
            Ok(Json(s.store.grant($subject, &name, &GrantScope::System).await?))
        }

        /// `PUT /v1/system/…_roles/{name}` with `{"role"}`.
        pub(super) async fn $sys_put(
            State(s): State<ApiState>,
            Extension(p): Extension<Principal>,
            ApiPath(name): ApiPath<String>,
            ApiJson(input): ApiJson<RoleInput>,
        ) -> ApiResult<Json<GrantRow>> {
            put(&s, &p, $subject, &name, GrantScope::System, input).await
        }

        /// `DELETE /v1/system/…_roles/{name}`.
        pub(super) async fn $sys_delete(
            State(s): State<ApiState>,
            Extension(p): Extension<Principal>,
            ApiPath(name): ApiPath<String>,
        ) -> ApiResult<StatusCode> {
            s.store.delete_grant($subject, &name, &GrantScope::System, &p.name, now_ms()).await?;
            Ok(StatusCode::NO_CONTENT)
        }
    };
}

role_routes!(
    Subject::Principal,
    list_env_users,
    create_env_user,
    get_env_user,
    put_env_user,
    delete_env_user,
    list_system_users,
    create_system_user,
    get_system_user,
    put_system_user,
    delete_system_user
);
role_routes!(
    Subject::Group,
    list_env_groups,
    create_env_group,
    get_env_group,
    put_env_group,
    delete_env_group,
    list_system_groups,
    create_system_group,
    get_system_group,
    put_system_group,
    delete_system_group
);

/// A script of an environment (Teletraan's TokenRolesBean): its role there and its token's
/// expiry; `token` only in the answer that created it.
#[derive(Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ScriptRole {
    name: String,
    resource: String,
    #[serde(rename = "type")]
    resource_type: &'static str,
    role: AccessRole,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    expire_date: Option<EpochMs>,
    /// The principal its actions are recorded as.
    principal: String,
}

/// A script's principal: `<script>@<environment>`.
fn script_principal(env: &EnvName, name: &str) -> ApiResult<String> {
    let name = subject_name("name", name, false)?;
    if name.contains('@') {
        return Err(ApiError::bad_request("name: a script's name may not contain '@'"));
    }
    Ok(format!("{name}@{env}"))
}

async fn script_of(s: &ApiState, env: &EnvName, name: &str) -> ApiResult<ScriptRole> {
    let principal = script_principal(env, name)?;
    let grant = s.store.grant(Subject::Principal, &principal, &GrantScope::Env(env.clone())).await?;
    let expire_date =
        s.store.tokens(Some(&principal)).await?.iter().filter(|t| t.revoked_at.is_none()).find_map(|t| t.expires_at);
    Ok(ScriptRole {
        name: name.to_string(),
        resource: env.to_string(),
        resource_type: "ENV",
        role: grant.role,
        token: None,
        expire_date,
        principal,
    })
}

/// `GET /v1/envs/{env}/token_roles`: the environment's scripts.
pub(super) async fn list_env_scripts(
    State(s): State<ApiState>,
    ApiPath(env): ApiPath<String>,
) -> ApiResult<Json<Vec<ScriptRole>>> {
    let env = EnvName::parse(env)?;
    let suffix = format!("@{env}");
    let mut out = Vec::new();
    for g in s.store.grants_on(Subject::Principal, &GrantScope::Env(env.clone())).await? {
        if let Some(name) = g.name.strip_suffix(&suffix) {
            out.push(script_of(&s, &env, name).await?);
        }
    }
    Ok(Json(out))
}

/// `POST /v1/envs/{env}/token_roles` with `{"name", "role", "expireDate"?}`: a script, its role
/// on the environment and a token (shown once; 180 days unless `expireDate` says otherwise).
pub(super) async fn create_env_script(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiPath(env): ApiPath<String>,
    ApiJson(input): ApiJson<RoleInput>,
) -> ApiResult<Created<ScriptRole>> {
    let env = EnvName::parse(env)?;
    let name = input.name.as_deref().unwrap_or_default().trim().to_string();
    let principal = script_principal(&env, &name)?;
    let role = role("role", input.role.as_deref())?;
    let now = now_ms();
    let expires = match input.expire_date {
        Some(d) if d <= now => return Err(ApiError::bad_request("expireDate must be in the future")),
        Some(d) => d,
        None => now + SCRIPT_TOKEN_DAYS * DAY_MS,
    };
    let scope = GrantScope::Env(env.clone());
    let (grant, token, secret) = s.store.create_script(&principal, &scope, role, Some(expires), &p.name, now).await?;
    tracing::info!(principal = %p.name, script = %principal, role = %role, "script token created");
    let body = ScriptRole {
        name,
        resource: env.to_string(),
        resource_type: "ENV",
        role: grant.role,
        token: Some(secret),
        expire_date: token.expires_at,
        principal,
    };
    let location = format!("/v1/envs/{env}/token_roles/{}", body.name);
    Ok(Created::at(location, body))
}

/// `GET /v1/envs/{env}/token_roles/{name}` (without the token).
pub(super) async fn get_env_script(
    State(s): State<ApiState>,
    ApiPath((env, name)): ApiPath<(String, String)>,
) -> ApiResult<Json<ScriptRole>> {
    Ok(Json(script_of(&s, &EnvName::parse(env)?, &name).await?))
}

/// `PUT /v1/envs/{env}/token_roles/{name}` with `{"role"}`: changes the script's role.
pub(super) async fn put_env_script(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiPath((env, name)): ApiPath<(String, String)>,
    ApiJson(input): ApiJson<RoleInput>,
) -> ApiResult<Json<ScriptRole>> {
    let env = EnvName::parse(env)?;
    let principal = script_principal(&env, &name)?;
    let scope = GrantScope::Env(env.clone());
    s.store.grant(Subject::Principal, &principal, &scope).await?;
    let role = role("role", input.role.as_deref())?;
    s.store.set_grant(Subject::Principal, &principal, &scope, role, &p.name, now_ms()).await?;
    Ok(Json(script_of(&s, &env, &name).await?))
}

/// `DELETE /v1/envs/{env}/token_roles/{name}`: the script, its role and its tokens.
pub(super) async fn delete_env_script(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiPath((env, name)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let env = EnvName::parse(env)?;
    let principal = script_principal(&env, &name)?;
    s.store.grant(Subject::Principal, &principal, &GrantScope::Env(env)).await?;
    s.store.delete_principal(&principal, &p.name, now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/principals`.
pub(super) async fn list_principals(State(s): State<ApiState>) -> ApiResult<Json<Vec<PrincipalRow>>> {
    Ok(Json(s.store.principals().await?))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct PrincipalInput {
    name: Option<String>,
    kind: Option<String>,
}

/// `POST /v1/principals` with `{"name", "kind": "USER|SCRIPT|AGENT"}`.
pub(super) async fn create_principal(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiJson(input): ApiJson<PrincipalInput>,
) -> ApiResult<Created<PrincipalRow>> {
    let name = subject_name("name", input.name.as_deref().unwrap_or_default(), false)?;
    let kind = match input.kind.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("USER") => "USER",
        Some("SCRIPT") => "SCRIPT",
        Some("AGENT") => "AGENT",
        Some(other) => return Err(ApiError::bad_request(format!("kind: {other:?} is not USER, SCRIPT or AGENT"))),
    };
    let row = s.store.create_principal(&name, kind, &p.name, now_ms()).await?;
    Ok(Created::new(row))
}

/// `DELETE /v1/principals/{name}`: with its roles and tokens.
pub(super) async fn delete_principal(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let name = subject_name("name", &name, false)?;
    if name == p.name {
        return Err(ApiError::conflict("a principal cannot delete itself"));
    }
    s.store.delete_principal(&name, &p.name, now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct TokenQuery {
    principal: Option<String>,
}

fn is_admin(p: &Principal) -> bool {
    p.may(AccessRole::Admin, Target::System)
}

/// `GET /v1/tokens?principal=`: tokens without their secrets; an admin sees every one, anyone
/// else their own.
pub(super) async fn list_tokens(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiQuery(q): ApiQuery<TokenQuery>,
) -> ApiResult<Json<Vec<TokenInfo>>> {
    let whose = match (q.principal, is_admin(&p)) {
        (Some(who), true) => Some(who),
        (None, true) => None,
        (Some(who), false) if who != p.name => {
            return Err(ApiError::forbidden("only an ADMIN of the system lists other principals' tokens"));
        }
        (_, false) => Some(p.name.clone()),
    };
    Ok(Json(s.store.tokens(whose.as_deref()).await?))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct TokenInput {
    principal: Option<String>,
    description: Option<String>,
    /// Epoch ms when the token stops working (none: never).
    #[serde(default, deserialize_with = "schema::model::lenient::opt_i64")]
    expires_at: Option<EpochMs>,
    /// API, AGENT or ENROLL (default: AGENT for agent principals, else API).
    kind: Option<String>,
    /// For AGENT and ENROLL tokens: the host groups they may claim (absent: any).
    groups: Option<Vec<String>>,
    /// For ENROLL tokens: may replace the credential of a host that already enrolled.
    #[serde(default)]
    reenroll: bool,
}

/// The answer to a token's creation: the only time its secret is shown.
#[derive(Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct CreatedToken {
    token: String,
    #[serde(flatten)]
    info: TokenInfo,
}

/// `POST /v1/tokens` with `{"principal", "description"?, "expiresAt"?, "kind"?, "groups"?,
/// "reenroll"?}`: a token for an existing principal, its secret shown once. Agent principals
/// hold AGENT tokens (static, for pings) and ENROLL tokens (hosts enroll with them for a
/// credential of their own); `groups` scopes either to host groups.
pub(super) async fn create_token(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiJson(input): ApiJson<TokenInput>,
) -> ApiResult<Created<CreatedToken>> {
    let principal = subject_name("principal", input.principal.as_deref().unwrap_or_default(), false)?;
    if let Some(d) = &input.description {
        schema::model::check_text("description", d, 256)?;
    }
    let now = now_ms();
    if input.expires_at.is_some_and(|e| e <= now) {
        return Err(ApiError::bad_request("expiresAt must be in the future"));
    }
    let kind = match input.kind.as_deref().map(str::to_ascii_uppercase) {
        None => None,
        Some(k) => Some(
            TokenKind::parse(&k)
                .ok_or_else(|| ApiError::bad_request(format!("kind: {k:?} is not API, AGENT or ENROLL")))?,
        ),
    };
    let groups = match input.groups {
        None => None,
        Some(g) if g.is_empty() || g.len() > 256 => {
            return Err(ApiError::bad_request("groups: between 1 and 256 group names (absent: any group)"));
        }
        Some(g) => Some(
            g.into_iter()
                .map(GroupName::parse)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ApiError::bad_request(format!("groups: {e}")))?,
        ),
    };
    let spec = NewToken {
        principal: &principal,
        kind,
        description: input.description.as_deref(),
        expires_at: input.expires_at,
        groups,
        reenroll: input.reenroll,
    };
    let (info, token) = s.store.create_token(&spec, &p.name, now).await?;
    tracing::info!(by = %p.name, principal = %info.principal, token.id = %info.id, "token created");
    let location = format!("/v1/tokens/{}", info.id);
    Ok(Created::at(location, CreatedToken { token, info }))
}

async fn own_token(s: &ApiState, p: &Principal, id: &str) -> ApiResult<TokenInfo> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "_-.@".contains(c)) {
        return Err(ApiError::bad_request("a token id has letters, digits and '_-.@' only"));
    }
    let info = s.store.token_info(id).await?;
    if info.principal != p.name && !is_admin(p) {
        // Not the caller's: as if it did not exist.
        return Err(ApiError::not_found(format!("Token {id} does not exist.")));
    }
    Ok(info)
}

/// `GET /v1/tokens/{id}` (one's own, or any for an admin).
pub(super) async fn get_token(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<TokenInfo>> {
    Ok(Json(own_token(&s, &p, &id).await?))
}

/// `DELETE /v1/tokens/{id}`: revokes it (one's own, or any for an admin).
pub(super) async fn revoke_token(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<TokenInfo>> {
    own_token(&s, &p, &id).await?;
    let info = s.store.revoke_token(&id, &p.name, now_ms()).await?;
    tracing::info!(by = %p.name, token.id = %id, "token revoked");
    Ok(Json(info))
}
