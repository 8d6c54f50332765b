// The admin's daily jobs: people (add, extension, SIP and console passwords, dismissal) and
// who answers which queue. SIP credentials are shown once, as the API issues them.

import { $, api, attempt } from "./api.js";

let people = [];

function showCredentials(user, assignment) {
  const sip = assignment.sip;
  $("credentials").textContent = sip.password
    ? `SIP account of ${user.name}: user ${sip.username}, password ${sip.password}, ` +
      `domain ${sip.domain}, registrar ${sip.registrar}. It is shown only now.`
    : `${user.name} has extension ${assignment.extension}.`;
}

async function act(doing) {
  await attempt(doing);
  await showPeople();
}

function button(text, name, onClick) {
  const control = document.createElement("button");
  control.type = "button";
  control.textContent = text;
  control.setAttribute("aria-label", name);
  control.addEventListener("click", onClick);
  return control;
}

function input(name, type = "text") {
  const field = document.createElement("input");
  field.type = type;
  field.setAttribute("aria-label", name);
  return field;
}

function userRow(user) {
  const row = document.createElement("tr");
  for (const text of [user.name, user.email || "", user.role, user.extension || ""]) {
    const cell = document.createElement("td");
    cell.textContent = text;
    row.append(cell);
  }
  const actions = document.createElement("td");
  const extension = input(`Extension for ${user.name}`);
  extension.inputMode = "numeric";
  extension.maxLength = 4;
  const password = input(`New password for ${user.name}`, "password");
  password.autocomplete = "new-password";
  actions.append(
    extension,
    button("Assign", `Assign extension to ${user.name}`, () => act(async () => {
      showCredentials(user, await api("PUT", `/users/${user.id}/extension`, { extension: extension.value.trim() }));
    })),
    button("Reset SIP password", `Reset SIP password of ${user.name}`, () => act(async () => {
      showCredentials(user, await api("POST", `/users/${user.id}/sip-password`));
    })),
    password,
    button("Set password", `Set password of ${user.name}`, () => act(async () => {
      await api("PUT", `/users/${user.id}/password`, { password: password.value });
      password.value = "";
      $("credentials").textContent = `${user.name} can sign in with the new password.`;
    })),
    button("Dismiss", `Dismiss ${user.name}`, () => {
      if (confirm(`Dismiss ${user.name}? Their extension and queue places are released.`)) {
        act(() => api("PATCH", `/users/${user.id}`, { active: false }));
      }
    }),
  );
  row.append(actions);
  return row;
}

function queueMembers(queue) {
  const group = document.createElement("fieldset");
  const legend = document.createElement("legend");
  legend.textContent = queue.name;
  group.append(legend);
  const members = new Set(queue.members);
  const boxes = people.map((user) => {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = user.id;
    box.checked = members.has(user.id);
    label.append(box, ` ${user.name}`);
    group.append(label);
    return box;
  });
  group.append(button("Save members", `Save members of ${queue.name}`, () => act(() =>
    api("PATCH", `/queues/${queue.id}`, {
      members: boxes.filter((box) => box.checked).map((box) => Number(box.value)),
    }))));
  return group;
}

async function showPeople() {
  people = (await api("GET", "/users?active=true&limit=500")).items;
  $("user-rows").replaceChildren(...people.map(userRow));
  const queues = (await api("GET", "/queues")).items;
  $("queue-members").replaceChildren(...queues.map(queueMembers));
}

async function addUser(submit) {
  submit.preventDefault();
  await act(async () => {
    await api("POST", "/users", {
      name: $("new-user-name").value.trim(),
      email: $("new-user-email").value.trim() || null,
      role: $("new-user-role").value,
    });
    $("new-user-form").reset();
  });
}

export async function enterAdmin() {
  await showPeople();
}

export function onAdminEvent(event) {
  if (event.type.startsWith("user_") || event.type.startsWith("queue_updated")) showPeople();
}

export function wireAdmin() {
  $("new-user-form").addEventListener("submit", addUser);
}
