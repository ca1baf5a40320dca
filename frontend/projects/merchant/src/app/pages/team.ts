import { Component, OnInit, inject, signal } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { MatButtonModule } from '@angular/material/button';
import { MatFormFieldModule } from '@angular/material/form-field';
import { MatInputModule } from '@angular/material/input';
import { MatSelectModule } from '@angular/material/select';

import { AccountService } from '@gen/paymesh/admin/v1/account_pb';
import type { Invite, User } from '@gen/paymesh/admin/v1/admin_pb';
import { Actions } from '@shared/actions';
import { Confirm } from '@shared/confirm';
import { TimePipe } from '@shared/format';
import { IdempotencyKey, IdempotencyKeys } from '@shared/idempotency';
import { describeError } from '@shared/rest';
import { SecretPanel } from '../secret-panel';
import { Session } from '../session';

/** What each role may do, as the invite form explains it. */
export const ROLES: readonly { value: string; label: string }[] = [
  { value: 'admin', label: 'everything, refunds and the team included' },
  { value: 'developer', label: 'reads, and manages API keys and webhooks' },
  { value: 'viewer', label: 'reads only' },
];

/** The merchant's users and open invitations; admins invite, change roles and remove. */
@Component({
  selector: 'pm-team-page',
  imports: [FormsModule, MatButtonModule, MatFormFieldModule, MatInputModule, MatSelectModule, TimePipe, SecretPanel],
  template: `
    <h1 class="page-title">Team</h1>
    @if (error()) { <p class="error-text" role="alert">{{ error() }}</p> }
    @if (notice()) { <p role="status" data-testid="notice">{{ notice() }}</p> }
    @if (invited(); as i) {
      <pm-secret-panel [title]="'Invitation for ' + i.email + ' (' + i.role + ').'" [secret]="i.acceptUrl" label="Invitation link"
                       (done)="invited.set(null)">
        <span class="muted">Send it to them yourself; it works once, until {{ i.expireTime | time }}.</span>
      </pm-secret-panel>
    }
    @if (session.isAdmin()) {
      <section class="panel" aria-labelledby="invite-title">
        <h2 id="invite-title">Invite someone</h2>
        <form class="toolbar-row" (ngSubmit)="invite()" (input)="inviteKey.reset()">
          <mat-form-field appearance="outline" subscriptSizing="dynamic" class="email">
            <mat-label>Email</mat-label>
            <input matInput type="email" name="email" [(ngModel)]="email" required data-testid="invite-email">
          </mat-form-field>
          <mat-form-field appearance="outline" subscriptSizing="dynamic" class="role">
            <mat-label>Role</mat-label>
            <mat-select name="role" [(ngModel)]="role" (ngModelChange)="inviteKey.reset()" data-testid="invite-role">
              @for (r of roles; track r.value) { <mat-option [value]="r.value">{{ r.value }}</mat-option> }
            </mat-select>
          </mat-form-field>
          <button mat-flat-button type="submit" [disabled]="busy()" data-testid="invite">Invite</button>
        </form>
        <ul class="muted roles">
          @for (r of roles; track r.value) { <li><strong>{{ r.value }}</strong>: {{ r.label }}</li> }
        </ul>
      </section>
    }
    <section class="panel table-wrap" tabindex="0" aria-labelledby="users-title">
      <h2 id="users-title">Users</h2>
      <table data-testid="users-table">
        <thead><tr><th>Email</th><th>Role</th><th>Since</th><th><span class="visually-hidden">Actions</span></th></tr></thead>
        <tbody>
          @for (u of users(); track u.id) {
            <tr [attr.data-testid]="'user-' + u.email">
              <td>{{ u.email }} @if (u.id === session.userId()) { <span class="muted">(you)</span> }</td>
              <td>
                @if (session.isAdmin()) {
                  <mat-form-field appearance="outline" subscriptSizing="dynamic" class="role-cell">
                    <mat-select [aria-label]="'Role of ' + u.email" [ngModel]="u.role" (ngModelChange)="changeRole(u, $event)" [disabled]="busy()" data-testid="user-role">
                      @for (r of roles; track r.value) { <mat-option [value]="r.value">{{ r.value }}</mat-option> }
                    </mat-select>
                  </mat-form-field>
                } @else {
                  <span data-testid="user-role">{{ u.role }}</span>
                }
              </td>
              <td>{{ u.createTime | time }}</td>
              <td>
                @if (session.isAdmin() && u.id !== session.userId()) {
                  <button mat-button type="button" (click)="remove(u)" [disabled]="busy()" data-testid="remove-user">Remove</button>
                }
              </td>
            </tr>
          }
        </tbody>
      </table>
    </section>
    <section class="panel table-wrap" tabindex="0" aria-labelledby="invites-title">
      <h2 id="invites-title">Open invitations</h2>
      <table data-testid="invites-table">
        <thead><tr><th>Email</th><th>Role</th><th>Sent</th><th>Expires</th></tr></thead>
        <tbody>
          @for (i of invites(); track i.id) {
            <tr [attr.data-testid]="'invite-' + i.email"><td>{{ i.email }}</td><td>{{ i.role }}</td><td>{{ i.createTime | time }}</td><td>{{ i.expireTime | time }}</td></tr>
          } @empty {
            <tr><td colspan="4" class="muted">No open invitations.</td></tr>
          }
        </tbody>
      </table>
    </section>
  `,
  styles: `
    table { width: 100%; border-collapse: collapse; }
    th, td { text-align: left; padding: 0.5rem; border-bottom: 1px solid #e6e8ee; font-size: 0.9rem; vertical-align: middle; }
    th { font-weight: 500; color: #545b69; }
    .email { width: 20rem; } .role { width: 12rem; } .role-cell { width: 11rem; }
    .roles { margin: 0.75rem 0 0; padding-left: 1.25rem; font-size: 0.85rem; }
  `,
})
export class TeamPage implements OnInit {
  readonly session = inject(Session);
  private readonly confirm = inject(Confirm);
  readonly users = signal<User[]>([]);
  readonly invites = signal<Invite[]>([]);
  readonly invited = signal<Invite | null>(null);
  private readonly actions = new Actions();
  readonly error = this.actions.error;
  readonly notice = this.actions.notice;
  readonly busy = this.actions.busy;
  readonly roles = ROLES;
  email = '';
  role = 'developer';
  readonly inviteKey = new IdempotencyKey();
  private readonly keys = new IdempotencyKeys();

  ngOnInit(): void {
    void this.load();
  }

  async load(): Promise<void> {
    try {
      const response = await this.session.api(AccountService.method.listUsers, {});
      this.users.set(response.users);
      this.invites.set(response.invites);
    } catch (error) {
      this.error.set(describeError(error));
    }
  }

  async invite(): Promise<void> {
    if (!this.email.trim()) {
      this.error.set('Enter the email address to invite.');
      return;
    }
    await this.actions.run(async () => {
      const invite = await this.session.api(
        AccountService.method.inviteUser,
        { email: this.email.trim(), role: this.role },
        { idempotencyKey: this.inviteKey.get() },
      );
      this.inviteKey.reset();
      this.email = '';
      this.invited.set(invite);
      await this.load();
    });
  }

  async changeRole(user: User, role: string): Promise<void> {
    const action = `role:${user.id}:${role}`;
    await this.actions.run(async () => {
      const updated = await this.session.api(
        AccountService.method.updateUser,
        { id: user.id, role },
        { idempotencyKey: this.keys.get(action) },
      );
      this.keys.done(action);
      this.notice.set(`${updated.email} is now ${updated.role}.`);
    });
    // On success the list shows the new role; on a refusal, the role the server kept.
    await this.load();
  }

  async remove(user: User): Promise<void> {
    const confirmed = await this.confirm.ask({
      title: 'Remove this user?',
      message: `Remove ${user.email} (${user.role}) from the team? They are signed out at once and can no longer sign in.`,
      action: 'Remove',
    });
    if (!confirmed) return;
    const action = `remove:${user.id}`;
    await this.actions.run(async () => {
      await this.session.api(AccountService.method.removeUser, { id: user.id }, { idempotencyKey: this.keys.get(action) });
      this.keys.done(action);
      this.notice.set(`${user.email} removed.`);
      await this.load();
    });
  }
}
