//! Diesel table definitions, identical for both backends (see `migrations/`).

diesel::table! {
    workflow_executions (id) {
        id -> Text,
        workflow_name -> Text,
        workflow_version -> Text,
        package_id -> Nullable<Text>,
        status -> Text,
        total_tasks -> Integer,
        remaining_tasks -> Integer,
        failed_tasks -> Integer,
        event_seq -> BigInt,
        error -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
        started_at -> Nullable<BigInt>,
        completed_at -> Nullable<BigInt>,
        dedup_key -> Nullable<Text>,
    }
}

diesel::table! {
    task_executions (execution_id, task_id) {
        execution_id -> Text,
        task_id -> Text,
        position -> Integer,
        dependents -> Text,
        status -> Text,
        remaining_deps -> Integer,
        failed_deps -> Integer,
        attempt -> Integer,
        max_attempts -> Integer,
        recoveries -> Integer,
        ready_at -> Nullable<BigInt>,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<BigInt>,
        error -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
        started_at -> Nullable<BigInt>,
        completed_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    contexts (execution_id, owner) {
        execution_id -> Text,
        owner -> Text,
        data -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    execution_events (execution_id, seq) {
        execution_id -> Text,
        seq -> BigInt,
        task_id -> Nullable<Text>,
        kind -> Text,
        attempt -> Nullable<Integer>,
        message -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    cron_schedules (id) {
        id -> Text,
        package_id -> Text,
        tenant -> Text,
        name -> Text,
        workflow -> Text,
        expression -> Text,
        timezone -> Text,
        catch_up -> Text,
        catch_up_max -> Nullable<Integer>,
        next_run_at -> BigInt,
        last_run_at -> Nullable<BigInt>,
        missed_count -> BigInt,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    cron_fires (schedule_id, instant) {
        schedule_id -> Text,
        instant -> BigInt,
        execution_id -> Text,
        fired_at -> BigInt,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        name -> Text,
        key_hash -> Text,
        role -> Text,
        tenant_id -> Nullable<Text>,
        is_admin -> Bool,
        created_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    tenants (name) {
        name -> Text,
        name_lower -> Text,
        description -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    packages (id) {
        id -> Text,
        tenant -> Text,
        name -> Text,
        version -> Text,
        sha256 -> Text,
        size -> BigInt,
        archive -> Binary,
        signature -> Nullable<Binary>,
        signed -> Bool,
        has_library -> Bool,
        build_status -> Text,
        build_error -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
        unloading_at -> Nullable<BigInt>,
        build_claimed_by -> Nullable<Text>,
        build_heartbeat_at -> Nullable<BigInt>,
        build_started_at -> Nullable<BigInt>,
        build_finished_at -> Nullable<BigInt>,
        build_attempts -> Integer,
        build_log -> Nullable<Text>,
    }
}

diesel::table! {
    package_generation (id) {
        id -> Integer,
        generation -> BigInt,
    }
}

diesel::table! {
    audit_log (id) {
        id -> BigInt,
        at -> BigInt,
        actor -> Text,
        action -> Text,
        target -> Text,
        detail -> Text,
    }
}

diesel::table! {
    trigger_polls (tenant, trigger_name, slot) {
        tenant -> Text,
        trigger_name -> Text,
        slot -> BigInt,
        claimed_at -> BigInt,
    }
}

diesel::table! {
    workflow_pauses (tenant, workflow) {
        tenant -> Text,
        workflow -> Text,
        paused_at -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    workflow_executions,
    task_executions,
    contexts,
    execution_events,
    cron_schedules,
    cron_fires,
    api_keys,
    tenants,
    packages,
    package_generation,
    audit_log,
    trigger_polls,
    workflow_pauses
);
